"""Files on disk: how names are shown and fitted, where a sidecar is, whether bytes
are an image we may send, and where a file's bytes go once it has an outcome."""

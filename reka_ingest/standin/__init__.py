"""The stand-in Reka Vision server: a faithful local copy of the image API
(shared/reka-api.md) for development, demos, tests, benchmarks and fault drills.
Product code never imports it; only `reka-ingest fake-api` starts it."""

"""What decides when work happens: the folder watcher, batching, the beat
schedule, backfill and reconcile scans. `scheduler` and `worker` never import each
other; what they share (task and queue names) lives in `reka_ingest.core`."""

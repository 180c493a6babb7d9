"""What decides when work happens: the folder watcher, batching, the beat
schedule, reconcile scans. May import `worker`; `worker` never imports this."""

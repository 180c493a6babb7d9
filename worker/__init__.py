"""What runs inside Celery workers: the Celery app, tasks, signals, the
per-process runtime, the uploader, the poller and the shared API budget."""

"""What runs inside Celery workers and what they share: settings, the Celery app
factory, tasks, the Reka API client, the ledger, logging."""

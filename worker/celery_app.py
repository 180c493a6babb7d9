"""The worker's Celery app: `celery -A worker.celery_app worker`.

Built from the broker, queue and route configuration every app shares
(`reka_ingest.core.queues`), plus what only a consumer needs; the tasks are
registered under the names kept there, and this process's one `Runtime` is
started by the pool child's process-init signal (`worker.signals`).

Delivery: late acknowledgement, rejected back to the queue when a worker dies,
prefetch 1 (an upload holds its process for seconds; prefetching would strand
batches behind it). Processes: `worker.slots.pool_processes`, two per upload request
in flight (INGEST_WORKER_CONCURRENCY) and two for the control queue's tasks.

`app` is built on first attribute access (PEP 562), not at import, from the
environment's settings.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from reka_ingest.core.queues import lazy_app, sender_config
from reka_ingest.core.settings import Settings, load_settings
from worker import signals, tasks
from worker.runtime import ProcessRuntime, Runtime
from worker.slots import pool_processes

__all__ = ["create_app", "worker_config"]


def worker_config(settings: Settings) -> dict[str, Any]:
    """What only a consuming app needs, on top of `sender_config`."""
    return {
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # A task whose channel is gone can no longer be acknowledged and will be
        # delivered again; stop it rather than let it finish twice (Celery 6's default).
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_prefetch_multiplier": 1,
        # Upload requests in flight are INGEST_WORKER_CONCURRENCY (worker.slots); the
        # processes around them check and record batches, and run beat's sweeps.
        "worker_concurrency": pool_processes(settings.ingest.worker_concurrency),
        "worker_hijack_root_logger": False,
        "worker_send_task_events": True,  # for Flower
    }


def create_app(settings: Settings | None = None, *, name: str = "reka_ingest") -> Celery:
    """The worker app: shared configuration, the tasks, and the per-process runtime's start."""
    settings = settings or load_settings()
    app = Celery(name, set_as_current=False)
    app.conf.update(sender_config(settings.ingest) | worker_config(settings))
    process = ProcessRuntime(lambda: Runtime.start(settings))
    tasks.register(app, process.get)
    signals.connect(settings, process)
    return app


__getattr__ = lazy_app(create_app)

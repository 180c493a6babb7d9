"""The Celery app factory: an app built from settings, with no side effect at
import. Redis is the broker (transport only; the ledger is the truth); there is
no result backend, because results live in the ledger.

Delivery: late acknowledgement, rejected back to the queue when a worker dies,
prefetch 1 (an upload holds its process for seconds; prefetching would strand
batches behind it). Redis redelivers an unacknowledged task after
`INGEST_VISIBILITY_TIMEOUT` seconds; nothing waits in Redis longer than that,
because every longer wait is a time in the ledger.
"""

from __future__ import annotations

from typing import Any, Final

from celery import Celery
from kombu import Exchange, Queue

from reka_ingest.core.settings import Settings, load_settings

TASK_UPLOAD_BATCH: Final = "reka_ingest.upload_batch"
TASK_POLL_DUE: Final = "reka_ingest.poll_due"
TASK_SWEEP_BATCHES: Final = "reka_ingest.sweep_batches"

UPLOAD_QUEUE: Final = "reka_ingest.uploads"
CONTROL_QUEUE: Final = "reka_ingest.control"


def _queue(name: str) -> Queue:
    return Queue(name, Exchange(""), routing_key=name)


def _route(name: str) -> dict[str, str]:
    return {"queue": name, "exchange": "", "routing_key": name}


def create_app(settings: Settings | None = None, *, name: str = "reka_ingest") -> Celery:
    settings = settings or load_settings()
    ingest = settings.ingest
    app = Celery(name, set_as_current=False)
    conf: dict[str, Any] = {
        "broker_url": ingest.broker_url,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {"visibility_timeout": ingest.visibility_timeout},
        "result_backend": None,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # A task whose channel is gone can no longer be acknowledged and will be
        # delivered again; stop it rather than let it finish twice (Celery 6's default).
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_prefetch_multiplier": 1,
        "worker_concurrency": ingest.worker_concurrency,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": True,  # for Flower
        "task_send_sent_event": True,
        # Every queue on the default exchange with its own name as routing key: on
        # Redis that delivers straight into the list of that name, with no binding
        # to look up, so a Redis restarted without its data (or wiped) loses no
        # message from a producer that declared its queues before. A named
        # exchange would route through bindings stored in Redis, and drop.
        "task_queues": tuple(_queue(name) for name in (UPLOAD_QUEUE, CONTROL_QUEUE)),
        "task_default_queue": UPLOAD_QUEUE,
        "task_default_exchange": "",
        "task_default_routing_key": UPLOAD_QUEUE,
        "task_routes": {
            TASK_UPLOAD_BATCH: _route(UPLOAD_QUEUE),
            TASK_POLL_DUE: _route(CONTROL_QUEUE),
            TASK_SWEEP_BATCHES: _route(CONTROL_QUEUE),
        },
        "timezone": "UTC",
    }
    app.conf.update(conf)
    # Imported here: tasks import the runtime (HTTP client, ledger), which the
    # watcher's producer-only app never needs at import time.
    from worker import signals, tasks  # noqa: PLC0415 - see above

    tasks.register(app)
    signals.connect(settings)
    return app


def send_upload(app: Celery, batch_id: int) -> None:
    """Enqueue one batch by id: the only thing a message ever carries."""
    app.send_task(TASK_UPLOAD_BATCH, args=[batch_id], queue=UPLOAD_QUEUE)

"""The names the processes agree on over Redis: every task name, every queue
name, and the Celery configuration any app needs to send them (broker,
serializer, queues, routes).

The scheduler sends by name through a producer app built from
`sender_config`; the worker builds its app from the same configuration and
registers the tasks under these names. Neither imports the other: this module
is all they share.

Every queue is on the default exchange with its own name as routing key: on
Redis that delivers straight into the list of that name, with no binding to
look up, so a Redis restarted without its data (or wiped) loses no message
from a producer that declared its queues before. A named exchange would route
through bindings stored in Redis, and drop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from kombu import Exchange, Queue

from reka_ingest.core.settings import IngestSettings

if TYPE_CHECKING:
    from celery import Celery

TASK_UPLOAD_BATCH: Final = "reka_ingest.upload_batch"
TASK_POLL_DUE: Final = "reka_ingest.poll_due"
TASK_SWEEP_BATCHES: Final = "reka_ingest.sweep_batches"
# The periodic, read-only check of the ledger against what Reka holds (beat, when
# INGEST_SERVER_CHECK_INTERVAL is set); its findings go to Redis for metrics and status.
TASK_SERVER_CHECK: Final = "reka_ingest.server_check"
# Notifications (INGEST_NOTIFY_URL): beat's sweep that detects events, and the post of
# one event (its JSON body is the message: events carry no secret).
TASK_NOTIFY_SWEEP: Final = "reka_ingest.notify_sweep"
TASK_NOTIFY: Final = "reka_ingest.notify"

UPLOAD_QUEUE: Final = "reka_ingest.uploads"
CONTROL_QUEUE: Final = "reka_ingest.control"
QUEUES: Final = (UPLOAD_QUEUE, CONTROL_QUEUE)

# Which queue each task goes to: uploads alone on theirs, so a sweep or a poll
# never waits behind a backlog of batches.
TASK_QUEUES: Final[Mapping[str, str]] = {
    TASK_UPLOAD_BATCH: UPLOAD_QUEUE,
    TASK_POLL_DUE: CONTROL_QUEUE,
    TASK_SWEEP_BATCHES: CONTROL_QUEUE,
    TASK_SERVER_CHECK: CONTROL_QUEUE,
    TASK_NOTIFY_SWEEP: CONTROL_QUEUE,
    TASK_NOTIFY: CONTROL_QUEUE,
}


def _queue(name: str) -> Queue:
    return Queue(name, Exchange(""), routing_key=name)


def _route(name: str) -> dict[str, str]:
    return {"queue": name, "exchange": "", "routing_key": name}


def sender_config(settings: IngestSettings) -> dict[str, Any]:
    """The Celery configuration of any app on this broker: producer or worker.

    Redis is transport only (the ledger is the truth), so there is no result
    backend. Redis redelivers an unacknowledged task after
    `INGEST_VISIBILITY_TIMEOUT` seconds; nothing waits in Redis longer than
    that, because every longer wait is a time in the ledger.
    """
    return {
        "broker_url": settings.broker_url,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {"visibility_timeout": settings.visibility_timeout},
        "result_backend": None,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_send_sent_event": True,  # for Flower
        "task_queues": tuple(_queue(name) for name in QUEUES),
        "task_default_queue": UPLOAD_QUEUE,
        "task_default_exchange": "",
        "task_default_routing_key": UPLOAD_QUEUE,
        "task_routes": {task: _route(queue) for task, queue in TASK_QUEUES.items()},
        "timezone": "UTC",
    }


def send_upload(app: Celery, batch_id: int) -> None:
    """Enqueue one batch by id: the only thing a message ever carries."""
    app.send_task(TASK_UPLOAD_BATCH, args=[batch_id], queue=UPLOAD_QUEUE)


def send_notify(app: Celery, body: Mapping[str, Any]) -> None:
    """Enqueue the post of one notification event (a JSON object with no secret in it)."""
    app.send_task(TASK_NOTIFY, args=[dict(body)], queue=CONTROL_QUEUE)


def lazy_app(build: Callable[[], Celery]) -> Callable[[str], Any]:
    """A module `__getattr__` that builds the module's Celery app on first use, as
    `celery -A MODULE` asks for `MODULE.app` (or `.celery`): importing the module
    alone reads no settings and opens no connection."""
    built: list[Celery] = []

    def attribute(name: str) -> Any:
        if name not in ("app", "celery"):
            raise AttributeError(name)
        if not built:
            built.append(build())
        return built[0]

    return attribute

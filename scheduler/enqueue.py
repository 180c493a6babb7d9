"""Sending work to the workers: a producer-only Celery app, and the
production `enqueue`, one message per batch carrying its id only.

The app knows no task: it sends by name (`send_task`), with the broker,
queues and routes of `reka_ingest.core.queues`, the names the worker registers
its tasks under.
"""

from __future__ import annotations

from collections.abc import Callable

from celery import Celery

from reka_ingest.core.queues import send_upload, sender_config
from reka_ingest.core.settings import Settings


def producer_app(settings: Settings, *, name: str = "reka_ingest") -> Celery:
    """A Celery app that only sends (close it when done)."""
    app = Celery(name, set_as_current=False)
    app.conf.update(sender_config(settings.ingest))
    return app


def celery_enqueue(settings: Settings) -> tuple[Callable[[int], None], Celery]:
    """`enqueue(batch_id)` sending `upload_batch(batch_id)`, and the app (close it when done).

    The app is made ready to send at once: Celery resolves its broker transport and
    (disabled) result backend at the first `send_task`, importing modules (about
    0.2 s of CPU), which would otherwise fall on the first batch of a burst, while
    the files are coming in. Nothing is connected here: a broker not up yet is the
    first send's concern, as before."""
    app = producer_app(settings)
    app.backend  # noqa: B018 - resolved now, not at the first send (see above)
    app.producer_pool  # noqa: B018 - the transport's class imported now (see above)

    def enqueue(batch_id: int) -> None:
        send_upload(app, batch_id)

    return enqueue, app

"""The production `enqueue`: one Celery message per batch, carrying its id only.

The app is the producer-only Celery app from `worker.celery_app.create_app`;
nothing is imported from Celery until a command asks for it.
"""

from __future__ import annotations

from collections.abc import Callable

from celery import Celery

from reka_ingest.core.settings import Settings
from worker.celery_app import create_app, send_upload


def celery_enqueue(settings: Settings) -> tuple[Callable[[int], None], Celery]:
    """`enqueue(batch_id)` sending `upload_batch(batch_id)`, and the app (close it when done)."""
    app = create_app(settings)

    def enqueue(batch_id: int) -> None:
        send_upload(app, batch_id)

    return enqueue, app

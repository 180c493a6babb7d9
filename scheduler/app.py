"""The Celery app for the command line: `celery -A scheduler.app worker|beat|flower`.

Built on first attribute access (PEP 562), not at import, from the
environment's settings, with the beat schedule applied.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from reka_ingest.core.settings import Settings, load_settings
from scheduler.beat import beat_schedule
from worker.celery_app import create_app


def build(settings: Settings | None = None) -> Celery:
    settings = settings or load_settings()
    app = create_app(settings)
    app.conf.beat_schedule = beat_schedule(settings.ingest)
    app.conf.beat_schedule_filename = str(settings.ingest.data_dir / "celerybeat-schedule")
    return app


_app: Celery | None = None


def __getattr__(name: str) -> Any:
    global _app  # noqa: PLW0603 - the lazily built module attribute `app`
    if name in ("app", "celery"):
        if _app is None:
            _app = build()
        return _app
    raise AttributeError(name)

"""The beat app: `celery -A scheduler.app beat` (and Flower's app).

A producer-only app (`scheduler.enqueue.producer_app`) with the beat schedule,
which names tasks only; the worker runs them under those names. Logging is
set up our way when Celery sets up a process's logging. Built on first
attribute access (PEP 562), not at import, from the environment's settings.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, signals

from reka_ingest.core.logs import configure_logging
from reka_ingest.core.queues import lazy_app
from reka_ingest.core.settings import Settings, load_settings
from scheduler.beat import beat_schedule
from scheduler.enqueue import producer_app


def build(settings: Settings | None = None) -> Celery:
    settings = settings or load_settings()
    app = producer_app(settings)
    app.conf.beat_schedule = beat_schedule(settings.ingest)
    app.conf.beat_schedule_filename = str(settings.ingest.data_dir / "celerybeat-schedule")
    app.conf.beat_scheduler = "scheduler.beat_lock:LockedScheduler"  # one beat per data folder
    level, fmt = settings.ingest.log_level, settings.ingest.log_format

    def _setup_logging(**_: Any) -> None:
        configure_logging(level, fmt)

    signals.setup_logging.connect(_setup_logging, weak=False, dispatch_uid=f"{__name__}.logging")
    return app


__getattr__ = lazy_app(build)

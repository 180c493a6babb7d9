"""Celery signal handlers: logging set up our way in every worker process, and
the task's id and name bound to every log line the task writes."""

from __future__ import annotations

from typing import Any

import structlog
from celery import signals

from worker import metrics_counters
from worker.logs import configure_logging
from worker.runtime import set_runtime
from worker.settings import Settings

_connected = False


def connect(settings: Settings) -> None:
    """Connect once per process; later calls are no-ops."""
    global _connected  # noqa: PLW0603 - signal receivers are process-wide by nature
    if _connected:
        return
    _connected = True
    level, fmt = settings.ingest.log_level, settings.ingest.log_format
    metrics_counters.connect(settings)

    @signals.setup_logging.connect(weak=False)
    def _setup_logging(**_: Any) -> None:
        configure_logging(level, fmt)

    @signals.worker_process_init.connect(weak=False)
    def _fresh_runtime(**_: Any) -> None:
        set_runtime(None)  # the child builds its own ledger engine and HTTP client

    @signals.task_prerun.connect(weak=False)
    def _bind(task_id: str | None = None, task: Any = None, **_: Any) -> None:
        structlog.contextvars.bind_contextvars(task_id=task_id, task=getattr(task, "name", None))

    @signals.task_postrun.connect(weak=False)
    def _clear(**_: Any) -> None:
        structlog.contextvars.clear_contextvars()

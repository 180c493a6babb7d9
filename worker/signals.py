"""Celery signal handlers: logging set up our way in every worker process, and
the task's id and name bound to every log line the task writes."""

from __future__ import annotations

from typing import Any

import structlog
from celery import signals

from reka_ingest.core.logs import configure_logging, get_logger
from reka_ingest.core.settings import Settings
from reka_ingest.metrics import counters as metrics_counters
from worker.runtime import get_runtime, set_runtime

log = get_logger(__name__)

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
        # ... now, not in its first task: that cost the first batch of a drop ~0.3 s.
        try:
            get_runtime()
        except Exception as err:  # noqa: BLE001 - the first task builds it (and says why)
            log.warning("worker.runtime_warmup_failed", error=repr(err))

    @signals.task_prerun.connect(weak=False)
    def _bind(task_id: str | None = None, task: Any = None, **_: Any) -> None:
        structlog.contextvars.bind_contextvars(task_id=task_id, task=getattr(task, "name", None))

    @signals.task_postrun.connect(weak=False)
    def _clear(**_: Any) -> None:
        structlog.contextvars.clear_contextvars()

"""The worker app's Celery signal handlers: logging set up our way in every
worker process, this process's runtime started when a pool child starts, and
the task's id and name bound to every log line the task writes."""

from __future__ import annotations

import os
import shutil
from typing import Any

import structlog
from celery import signals

from reka_ingest.core.logs import configure_logging, get_logger
from reka_ingest.core.settings import Settings
from reka_ingest.files.heif import ensure_registered
from worker.runtime import ProcessRuntime
from worker.slots import slots_folder_of

log = get_logger(__name__)


def connect(settings: Settings, process: ProcessRuntime) -> None:
    """Connect the handlers of one worker app (`worker.celery_app.create_app`).

    Signals are process-wide, so the stateless handlers carry a dispatch uid and
    connect once however many apps a process builds.
    """
    level, fmt = settings.ingest.log_level, settings.ingest.log_format

    def _setup_logging(**_: Any) -> None:
        configure_logging(level, fmt)

    def _start_runtime(**_: Any) -> None:
        # At process start, so the first task of a drop does not pay for it (the
        # client, Pillow's and pillow-heif's openers: about a second on a busy
        # machine); the budget's rule goes to Redis at once, so every view can read it.
        try:
            runtime = process.start()
            runtime.budget.publish()
            runtime.client  # noqa: B018 - the property builds it: now, not at the first upload
            ensure_registered()
        except Exception as err:  # noqa: BLE001 - the first task builds it (and says why)
            log.warning("worker.runtime_warmup_failed", error=repr(err))

    signals.setup_logging.connect(_setup_logging, weak=False, dispatch_uid=f"{__name__}.logging")
    signals.worker_shutdown.connect(_remove_slots, dispatch_uid=f"{__name__}.slots")
    signals.worker_process_init.connect(_start_runtime, weak=False)
    signals.task_prerun.connect(_bind, dispatch_uid=f"{__name__}.bind")
    signals.task_postrun.connect(_clear, dispatch_uid=f"{__name__}.clear")


def _remove_slots(**_: Any) -> None:
    """The worker's request-slot folder goes with it (its pool children are gone)."""
    shutil.rmtree(slots_folder_of(os.getpid()), ignore_errors=True)


def _bind(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    structlog.contextvars.bind_contextvars(task_id=task_id, task=getattr(task, "name", None))


def _clear(**_: Any) -> None:
    structlog.contextvars.clear_contextvars()

"""The beat schedule: short, frequent sweeps, named by task (the worker
registers them under these names, `reka_ingest.core.queues`). Each entry
expires after one interval, so a backlog of sweeps never piles up behind busy
workers.

The server check (`INGEST_SERVER_CHECK_INTERVAL`, off at 0) is scheduled only
when its interval is set; a check still running when the next is due is not
doubled (the task holds a lock in Redis).

The notify sweep runs only when INGEST_NOTIFY_URL is set, at the batch sweep's
interval; it detects events and enqueues their posts (`worker.notify`)."""

from __future__ import annotations

from typing import Any

from reka_ingest.core.queues import (
    CONTROL_QUEUE,
    TASK_NOTIFY_SWEEP,
    TASK_POLL_DUE,
    TASK_SERVER_CHECK,
    TASK_SWEEP_BATCHES,
)
from reka_ingest.core.settings import IngestSettings


def beat_schedule(settings: IngestSettings) -> dict[str, dict[str, Any]]:
    schedule: dict[str, dict[str, Any]] = {
        "poll-indexing": {
            "task": TASK_POLL_DUE,
            "schedule": settings.poll_sweep_interval,
            "options": {"queue": CONTROL_QUEUE, "expires": settings.poll_sweep_interval},
        },
        "sweep-batches": {
            "task": TASK_SWEEP_BATCHES,
            "schedule": settings.sweep_interval,
            "options": {"queue": CONTROL_QUEUE, "expires": settings.sweep_interval},
        },
    }
    if settings.server_check_interval > 0:
        schedule["server-check"] = {
            "task": TASK_SERVER_CHECK,
            "schedule": settings.server_check_interval,
            "options": {"queue": CONTROL_QUEUE, "expires": settings.server_check_interval},
        }
    if settings.notify_url is not None:
        schedule["notify"] = {
            "task": TASK_NOTIFY_SWEEP,
            "schedule": settings.sweep_interval,
            "options": {"queue": CONTROL_QUEUE, "expires": settings.sweep_interval},
        }
    return schedule

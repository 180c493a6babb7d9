"""The Celery tasks: thin. Each takes ids (or nothing), calls a plain function
with this process's runtime, and logs one canonical line. Task and queue names
come from `reka_ingest.core.queues`, which the scheduler sends by."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis
from celery import Celery

from reka_ingest.core.logs import get_logger
from reka_ingest.core.queues import (
    CONTROL_QUEUE,
    TASK_POLL_DUE,
    TASK_SWEEP_BATCHES,
    TASK_UPLOAD_BATCH,
    send_upload,
)
from reka_ingest.ledger.reconcile import batches_to_send
from worker import parked
from worker.poller import poll_due
from worker.runtime import Runtime
from worker.uploader import upload_batch

log = get_logger(__name__)

SWEEP_LIMIT = 1000


def register(app: Celery, runtime: Callable[[], Runtime]) -> None:
    """Register the tasks on `app` alone (not shared with other apps: producers send
    by name); each call of `runtime` gives this process's Runtime."""

    @app.task(name=TASK_UPLOAD_BATCH, ignore_result=True, shared=False)
    def upload_batch_task(batch_id: int) -> None:
        started = time.monotonic()
        report = upload_batch(runtime(), int(batch_id))
        for child in report.enqueue:
            send_upload(app, child)
        log.info(
            "batch",
            batch_id=report.batch_id,
            outcome=report.outcome,
            files=report.files,
            bytes=report.bytes,
            uploaded=report.uploaded,
            failed=report.failed,
            request_id=report.request_id,
            error=report.error,
            retry_at=report.retry_at,
            split_into=report.enqueue or None,
            duration=round(time.monotonic() - started, 3),
        )

    @app.task(name=TASK_POLL_DUE, ignore_result=True, queue=CONTROL_QUEUE, shared=False)
    def poll_due_task() -> None:
        poll_due(runtime())

    @app.task(name=TASK_SWEEP_BATCHES, ignore_result=True, queue=CONTROL_QUEUE, shared=False)
    def sweep_batches_task() -> None:
        sweep_batches(runtime(), lambda batch_id: send_upload(app, batch_id))


def sweep_batches(rt: Runtime, send: Callable[[int], object]) -> list[int]:
    """Beat's batch sweep: first the accepted answers parked in Redis go to the ledger
    (so their batches are never listed to be sent again), then the batches due
    are sent (`send(batch_id)`); returns the ids sent."""
    try:
        applied = parked.drain(rt)
    except redis.RedisError as err:
        # Parked answers cannot be read now; a batch sent below still looks for its
        # own before anything is uploaded (and nothing is, without Redis's budget).
        log.warning("sweep_parked_unreadable", error=str(err))
        applied = []
    recorded = [a for a in applied if a.recorded]
    if applied:
        log.info(
            "sweep_parked",
            recorded=len(recorded),
            still_parked=len(applied) - len(recorded),
            failed=sum(1 for a in applied if a.gave_up),
        )
    due = batches_to_send(
        rt.ledger,
        now=rt.clock(),
        requeue_after=rt.settings.ingest.requeue_after,
        limit=SWEEP_LIMIT,
    )
    ids = [child for a in recorded for child in a.enqueue] + due
    for batch_id in ids:
        send(batch_id)
    if rt.counters is not None:
        rt.counters.resent(rt.ledger, due)
    if ids:
        log.info("sweep_batches", sent=len(ids), first=ids[0], last=ids[-1])
    return ids

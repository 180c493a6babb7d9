"""The Celery tasks: thin. Each takes ids (or nothing), calls a plain function
with this process's runtime, and logs one canonical line. Task and queue names
come from `reka_ingest.core.queues`, which the scheduler sends by."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

import redis
from celery import Celery, Task

from reka_ingest.core.constants import NOTIFY_MAX_RETRIES, NOTIFY_RETRY_BACKOFF_MAX
from reka_ingest.core.logs import get_logger
from reka_ingest.core.queues import (
    CONTROL_QUEUE,
    TASK_NOTIFY,
    TASK_NOTIFY_SWEEP,
    TASK_POLL_DUE,
    TASK_SERVER_CHECK,
    TASK_SWEEP_BATCHES,
    TASK_UPLOAD_BATCH,
    send_notify,
    send_upload,
)
from reka_ingest.ledger.reconcile import (
    batch_stranded,
    batches_to_send,
    mark_all_unsent,
    send_each,
)
from reka_ingest.metrics.counters import redis_client
from reka_ingest.metrics.server_check import (
    COUNTS,
    SERVER_CHECK_LOCK_KEY,
    record_check,
    record_failure,
)
from worker import broker_loss, parked
from worker.notify import NotifyRejected, NotifyUnavailable, deliver, notify_sweep
from worker.poller import poll_due
from worker.runtime import Runtime
from worker.serverside import CheckReport, check_server
from worker.uploader import upload_batch

log = get_logger(__name__)

SWEEP_LIMIT = 1000


def register(app: Celery, runtime: Callable[[], Runtime]) -> None:
    """Register the tasks on `app` alone (not shared with other apps: producers send
    by name); each call of `runtime` gives this process's Runtime."""

    @app.task(name=TASK_UPLOAD_BATCH, ignore_result=True, shared=False)
    def upload_batch_task(batch_id: int) -> None:
        started = time.monotonic()
        rt = runtime()
        report = upload_batch(rt, int(batch_id))
        unsent = send_each(rt.ledger, report.enqueue, lambda child: send_upload(app, child))
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
            not_sent=unsent,  # the split's batches: the sweep sends them at its next tick
            duration=round(time.monotonic() - started, 3),
        )

    @app.task(name=TASK_POLL_DUE, ignore_result=True, queue=CONTROL_QUEUE, shared=False)
    def poll_due_task() -> None:
        poll_due(runtime())

    @app.task(name=TASK_SWEEP_BATCHES, ignore_result=True, queue=CONTROL_QUEUE, shared=False)
    def sweep_batches_task() -> None:
        sweep_batches(runtime(), lambda batch_id: send_upload(app, batch_id))

    @app.task(name=TASK_SERVER_CHECK, ignore_result=True, queue=CONTROL_QUEUE, shared=False)
    def server_check_task() -> None:
        server_check(runtime())

    @app.task(name=TASK_NOTIFY_SWEEP, ignore_result=True, queue=CONTROL_QUEUE, shared=False)
    def notify_sweep_task() -> None:
        notify_sweep(runtime(), lambda body: send_notify(app, body))

    # One event's post: retried (backoff from 1 s, doubling, at most
    # NOTIFY_RETRY_BACKOFF_MAX, with jitter) while the webhook is down or answers
    # 5xx/408/429, at most NOTIFY_MAX_RETRIES times; a refusal is logged, not retried.
    @app.task(
        name=TASK_NOTIFY,
        bind=True,
        ignore_result=True,
        queue=CONTROL_QUEUE,
        shared=False,
        acks_late=True,
        autoretry_for=(NotifyUnavailable,),
        max_retries=NOTIFY_MAX_RETRIES,
        retry_backoff=True,
        retry_backoff_max=NOTIFY_RETRY_BACKOFF_MAX,
        retry_jitter=True,
    )
    def notify_task(self: Task[Any, Any], body: dict[str, Any]) -> None:
        attempt = self.request.retries + 1
        try:
            deliver(runtime().notifier, body)
        except NotifyUnavailable as err:
            log.warning(
                "notify_failed",
                kind=body.get("event"),
                id=body.get("id"),
                attempt=attempt,
                error=str(err),
                retry=attempt <= NOTIFY_MAX_RETRIES,
            )
            raise
        except NotifyRejected as err:
            log.error("notify_rejected", kind=body.get("event"), id=body.get("id"), error=str(err))


def sweep_batches(rt: Runtime, send: Callable[[int], object]) -> list[int]:
    """Beat's batch sweep: first the accepted answers parked in Redis go to the ledger
    (so their batches are never listed to be sent again), then queued rows left
    without a batch get one (`batch_stranded`), then the batches due are sent
    (`send(batch_id)`); returns the ids sent."""
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
    _resend_if_broker_lost(rt)
    ingest = rt.settings.ingest
    stranded = batch_stranded(
        rt.ledger,
        now=rt.clock(),
        # A batcher holds its rows up to batch_max_wait before it makes their batch.
        older_than=ingest.requeue_after + ingest.batch_max_wait,
        max_files=ingest.batch_max_files,
        max_bytes=ingest.batch_max_bytes,
        limit=SWEEP_LIMIT,
    )
    if stranded:
        log.warning("sweep_stranded_rows_batched", batches=stranded)
        if rt.counters is not None:
            rt.counters.stranded(rt.ledger, stranded)
    due = batches_to_send(
        rt.ledger,
        now=rt.clock(),
        requeue_after=ingest.requeue_after,
        limit=SWEEP_LIMIT,
    )
    ids = [child for a in recorded for child in a.enqueue] + stranded + due
    unsent = send_each(rt.ledger, ids, send)
    if unsent is not None:
        log.warning("sweep_not_sent", batches=len(ids), error=unsent, action="sent next tick")
    if rt.counters is not None:
        rt.counters.resent(rt.ledger, due)
    if ids:
        log.info("sweep_batches", sent=len(ids), first=ids[0], last=ids[-1])
    return ids


def _resend_if_broker_lost(rt: Runtime) -> None:
    """When the broker's data is new (`worker.broker_loss`), the messages of every
    batch queued before now are gone: mark them unsent, so this sweep sends them."""
    now = rt.clock()
    try:
        lost = broker_loss.lost_since_last_look(parked.broker(rt), now=now)
    except redis.RedisError as err:  # the send below meets the same and marks them unsent
        log.warning("sweep_broker_unreadable", error=type(err).__name__)
        return
    if lost:
        resent = mark_all_unsent(rt.ledger, sent_before=now)
        if resent:
            log.warning(
                "broker_data_lost",
                batches=resent,
                action="their messages are sent again now",
            )


# Release the check's lock only if it is still ours (it may have run out and been taken).
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def server_check(rt: Runtime, client: redis.Redis[bytes] | None = None) -> CheckReport | None:
    """Beat's periodic server check: `check_server(rt)`, read only, its counts and time
    stored in Redis (`reka_ingest.metrics.server_check`) for the metrics and `status`.

    One check at a time across the deployment: a lock in Redis (held at most the
    visibility timeout, after which Redis would deliver the task again anyway)
    makes a check sent while another still runs return None at once. A check
    that fails (the API or the ledger out) is logged and noted in Redis with the
    last good counts kept; it raises nothing, and the next interval tries again.
    """
    own = client is None
    r = client if client is not None else redis_client(rt.settings.ingest.broker_url)
    token = secrets.token_hex(8)
    try:
        try:
            ttl = max(60, rt.settings.ingest.visibility_timeout)
            if not r.set(SERVER_CHECK_LOCK_KEY, token, nx=True, ex=ttl):
                log.info("server_check_skipped", why="another check is running")
                return None
        except redis.RedisError as err:
            log.warning("server_check_skipped", why="redis", error=str(err))
            return None
        try:
            return _checked(rt, r)
        finally:
            try:
                r.eval(_RELEASE, 1, SERVER_CHECK_LOCK_KEY, token)  # type: ignore[no-untyped-call]
            except redis.RedisError as err:
                log.warning("server_check_unlock_failed", error=str(err))
    finally:
        if own:
            r.close()


def _checked(rt: Runtime, r: redis.Redis[bytes]) -> CheckReport | None:
    started = rt.clock()
    try:
        report = check_server(rt)
    except Exception as err:  # noqa: BLE001 - any failure is noted; the next interval retries
        error = f"{type(err).__name__}: {err}"
        log.warning("server_check_failed", error=error, seconds=round(rt.clock() - started, 3))
        try:
            record_failure(r, error, at=rt.clock())
        except redis.RedisError as redis_err:
            log.warning("server_check_unrecorded", error=str(redis_err))
        return None
    counts = {name: getattr(report, name) for name in COUNTS}
    try:
        record_check(r, counts, at=rt.clock(), seconds=report.seconds, notes=report.notes)
    except redis.RedisError as err:
        log.warning("server_check_unrecorded", error=str(err))
    log.info("server_check", **counts, seconds=round(report.seconds, 3))
    return report

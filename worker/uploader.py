"""upload_batch: the work behind the Celery task of the same name, without Celery.

One batch, one multipart request:
    claim (lease) -> check each file -> take a slot of the shared API budget
    -> take a request slot -> POST, its files marked uploading as it starts (the
       body's last piece waits for that write) -> feed the rate-limit headers back
    -> record each result in input order, with the hash of the bytes each file
       really sent -> move files to done/ (failures to failed/).

Outcomes by error:
    no budget left, or 429                   -> the batch waits in the ledger until
        the budget refills (or the server's retry-after) and the beat sweep sends
        it again; the attempt is given back, so the quota never fails a file.
    passing (timeout, connection, 5xx)       -> the batch waits in the ledger for
        a time (backoff) and the beat sweep sends it again; after the last
        attempt its files fail with `upload_failed`. No answer at all (a timeout,
        a connection dropped once made) flags the files `possible_duplicate`:
        the server may have stored them.
    413, or 400 in a batch of several       -> split in two and try the halves,
        until the file at fault is alone; then it fails with the API's message.
    401                                      -> files fail with `auth_failed`, and
        `reka-ingest retry --reason auth_failed` sends them again once the key is fixed.
Running it twice for one batch is safe: the claim lets one run in, and a run
after a worker died flags the files whose request may have gone out; a batch
whose lease ran out again after its last attempt (INGEST_UPLOAD_MAX_RETRIES)
fails at that claim instead of being sent once more. Each write of a run names
its claim (`ops.Hold`): a run whose lease ran out before its request (a long
wait for a slot) and whose batch was claimed again meanwhile stops at its next
write (`LeaseLost`), sending and writing nothing; the lease is renewed when the
request starts, so it covers the request, not the wait.

An answer the server accepted is never lost to our own database
(`worker.parked`): its recording is retried through a ledger outage
(INGEST_LEDGER_RETRY_SECONDS), then parked in Redis; a run of a batch with a
parked answer applies it instead of sending the batch again, and so does beat's
sweep.

The hash recorded is the hash of the bytes sent: the client hashes each file as
it streams it, and a file that changed after its claim gets the sent bytes'
sha256 and size in the same write as its result. Rows recorded as copies of it
by the old hash are copies of something it never sent: one of them is queued
again (in a new batch, enqueued with the report) and the others follow it.

HEIC/HEIF and AVIF files are sent as JPEGs made for the request
(`reka_ingest.files.convert`: temporary files, removed when the run ends); the
row keeps the original's sha256 and size (re-hashed as it is converted, so a
file changed after its claim is still noticed) and records the conversion. A
file that cannot be converted fails alone with `conversion_failed`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import redis
from pydantic import ValidationError

from reka_ingest.core.errors import (
    ApiAuthError,
    ApiError,
    ApiPayloadTooLarge,
    ApiRateLimited,
    ApiTransportError,
    ApiValidationError,
    FileRejected,
    LeaseLost,
    PermanentError,
    RetryableError,
)
from reka_ingest.core.logs import get_logger
from reka_ingest.core.states import BatchOutcome, Reason
from reka_ingest.files.convert import FOLDER as CONVERT_FOLDER
from reka_ingest.files.convert import Conversions, is_convertible
from reka_ingest.files.manifests import normalise_url
from reka_ingest.files.outbox import (
    file_failed,
    in_work_area,
    remove_empty_claim_folders,
)
from reka_ingest.files.validate import check_image
from reka_ingest.ledger import uploads as ops
from reka_ingest.reka.models import SentBytes, UploadItem, UploadResult, UrlItem
from worker import parked
from worker.backoff import RetryPolicy, backoff
from worker.budget import Wait, pause_for
from worker.indexing import decide
from worker.runtime import Runtime

log = get_logger(__name__)


class FileChanged(RetryableError):
    """A file changed between its check and the request; nothing was sent."""


@dataclass
class BatchReport:
    """What one run did; the task logs it as the batch's one canonical line."""

    batch_id: int
    outcome: BatchOutcome = BatchOutcome.SKIPPED
    files: int = 0
    bytes: int = 0
    uploaded: int = 0
    failed: int = 0
    request_id: str | None = None
    error: str | None = None
    final_paths: list[tuple[int, str]] = field(default_factory=list)  # recorded at the finish
    retry_at: float | None = None
    enqueue: list[int] = field(default_factory=list)  # new batches to send (after a split)
    settled: bool = False  # the outcome's recording finished the batch (or parked it)


def upload_batch(rt: Runtime, batch_id: int) -> BatchReport:
    report = BatchReport(batch_id)
    try:
        _run(rt, report)
    except LeaseLost as lost:
        # Another run claimed the batch after this one's lease ran out: it sends it.
        log.warning("batch_lease_lost", batch_id=batch_id, claim=lost.claim)
        report.outcome = BatchOutcome.SKIPPED
        report.error = str(lost)
    return report


def _run(rt: Runtime, report: BatchReport) -> None:
    """One run of `upload_batch`, filling `report`; raises `LeaseLost` (see the
    module's docstring)."""
    batch_id = report.batch_id
    if _parked_outcome_applied(rt, report):
        return  # its answer was parked: recorded now (or still waiting), never resent
    settings = rt.settings.ingest
    claimed = ops.claim_batch(
        rt.ledger,
        batch_id,
        now=rt.clock(),
        lease=settings.batch_lease,
        max_attempts=settings.upload_max_retries + 1,
    )
    if claimed is None:
        return
    if claimed.outcome_unknown:
        log.warning("batch_outcome_unknown", batch_id=batch_id, attempt=claimed.attempt)
    if claimed.given_up:
        _gave_up(rt, report, claimed)
        return
    report.files = len(claimed.files)
    report.bytes = sum(f.size for f in claimed.files)
    if any(f.is_url for f in claimed.files):  # an image URL list's rows: no bytes here
        _upload_url_batch(rt, report, claimed)
        _finish(rt, report, claimed)
        return
    with _conversions(rt) as conversions:  # the JPEGs made for this run, removed at its end
        files, items = _prepare(rt, claimed, report, conversions)
        if files and not _take_budget(rt, report, claimed.hold):
            return  # deferred in the ledger until the shared budget has room
        if files:
            _send(rt, report, claimed, files, items, conversions=conversions)
        else:
            report.outcome = BatchOutcome.FAILED if claimed.files else BatchOutcome.DONE
    _finish(rt, report, claimed)


def _finish(rt: Runtime, report: BatchReport, claimed: ops.ClaimedBatch) -> None:
    """The batch done, unless it waits (in the ledger) or its accepted answer finished it
    (or waits in Redis); the emptied claim folders removed."""
    if not report.settled:
        if report.outcome in (BatchOutcome.DEFERRED, BatchOutcome.SPLIT):
            return
        ops.finish_batch(
            rt.ledger,
            report.batch_id,
            now=rt.clock(),
            request_id=report.request_id,
            final_paths=report.final_paths,
            hold=claimed.hold,
        )
    remove_empty_claim_folders(rt.settings.ingest, (f.work_path for f in claimed.files))


def _parked_outcome_applied(rt: Runtime, report: BatchReport) -> bool:
    """Whether the batch had an accepted answer parked (see `worker.parked`): then it is
    applied here instead of sending the batch again, and the run ends."""
    try:
        applied = parked.take_over(rt, report.batch_id)
    except redis.RedisError as err:
        # Cannot tell whether its answer is parked; nothing is sent without Redis
        # anyway: the shared budget says wait, and the batch is deferred briefly.
        log.warning("parked_unknown", batch_id=report.batch_id, error=str(err))
        return False
    if applied is None:
        return False
    report.files = applied.files
    report.enqueue = list(applied.enqueue)
    if applied.busy:
        report.error = "its parked outcome is being recorded by another run"
    elif applied.gave_up:
        report.outcome = BatchOutcome.FAILED
        report.failed = applied.files
        report.error = applied.error
    elif applied.recorded:
        report.outcome = BatchOutcome.DONE
        report.uploaded = applied.files
    else:
        report.outcome = BatchOutcome.DEFERRED
        report.error = f"its outcome stays parked: {applied.error}"
    return True


def _gave_up(rt: Runtime, report: BatchReport, claimed: ops.ClaimedBatch) -> None:
    """The claim failed the files of a batch out of attempts: their bytes to failed/."""
    message = claimed.message or "gave up: out of attempts"
    log.error(
        "batch_gave_up",
        batch_id=report.batch_id,
        attempts=claimed.attempt,
        files=len(claimed.given_up),
    )
    for f in claimed.given_up:
        _move_failed(rt, f, Reason.UPLOAD_FAILED, message)
    remove_empty_claim_folders(rt.settings.ingest, (f.work_path for f in claimed.given_up))
    report.files = report.failed = len(claimed.given_up)
    report.error = message
    report.outcome = BatchOutcome.FAILED


def _conversions(rt: Runtime) -> Conversions:
    settings = rt.settings.ingest
    return Conversions(
        settings.data_dir / CONVERT_FOLDER,
        quality=settings.convert_quality,
        max_bytes=settings.max_image_bytes,
        stale_after=2 * settings.batch_lease,
    )


def _prepare(
    rt: Runtime, claimed: ops.ClaimedBatch, report: BatchReport, conversions: Conversions
) -> tuple[list[ops.BatchFile], list[UploadItem]]:
    """Check each file (converting HEIF/AVIF) and build its upload item; a file that
    fails here fails alone."""
    files: list[ops.BatchFile] = []
    items: list[UploadItem] = []
    hold = claimed.hold
    for f in claimed.files:
        try:
            path, filename = Path(f.work_path), os.path.basename(f.path)
            content_type = check_image(
                path, max_bytes=rt.settings.ingest.max_image_bytes, decode_convertible=False
            )
            if is_convertible(content_type):
                converted = conversions.convert(f.id, path, name=filename)
                path, filename = converted.path, converted.filename
                content_type = converted.content_type
            item = UploadItem(
                path=path,
                filename=filename,
                content_type=content_type,
                metadata=dict(f.sidecar or {}),
                index=f.index_flag,
            )
        except FileRejected as rejected:
            _fail(rt, hold, [f], Reason(rejected.reason), rejected.message)
            report.failed += 1
            continue
        except ValidationError as err:
            message = f"metadata cannot be sent: {err.errors()[0]['msg']}"
            _fail(rt, hold, [f], Reason.BAD_SIDECAR, message)
            report.failed += 1
            continue
        except Exception as err:  # an unforeseen error is this file's, not the batch's
            log.exception("upload.file_isolated", file_id=f.id, path=f.path)
            message = f"cannot be checked: {type(err).__name__}: {err}"
            _fail(rt, hold, [f], Reason.INTAKE_FAILED, message)
            report.failed += 1
            continue
        files.append(f)
        items.append(item)
    return files, items


def _upload_url_batch(rt: Runtime, report: BatchReport, claimed: ops.ClaimedBatch) -> None:
    """A batch of URL rows (an image URL list's lines): no file to check, hash or move;
    one `upload_urls` request, and everything else as for files (budget, split on a
    413 or 400 until the bad URL is alone, retries, parked outcomes, polling)."""
    if not all(f.is_url for f in claimed.files):  # mixed (retry, an older version): apart
        report.enqueue = ops.split_by_kind(
            rt.ledger, report.batch_id, now=rt.clock(), hold=claimed.hold
        )
        report.outcome = BatchOutcome.SPLIT
        return
    files, items = _url_items(rt, claimed, report)
    if not files:
        report.outcome = BatchOutcome.FAILED
        return
    if not _take_budget(rt, report, claimed.hold):
        return  # deferred in the ledger until the shared budget has room
    with _conversions(rt) as conversions:  # none for URLs; `_send` takes the (empty) set
        _send(
            rt,
            report,
            claimed,
            files,
            items,  # type: ignore[arg-type]  # `_upload` sends URL items with `upload_urls`
            conversions=conversions,
        )


def _url_items(
    rt: Runtime, claimed: ops.ClaimedBatch, report: BatchReport
) -> tuple[list[ops.BatchFile], list[UrlItem]]:
    """Each URL row's item: its URL (the normal form of the text it was written as)
    and metadata; a row that cannot make one fails alone."""
    files: list[ops.BatchFile] = []
    items: list[UrlItem] = []
    hold = claimed.hold
    for f in claimed.files:
        try:
            item = UrlItem(
                url=normalise_url(f.path), metadata=dict(f.sidecar or {}), index=f.index_flag
            )
        except ValidationError as err:
            _fail(rt, hold, [f], Reason.BAD_URL, f"cannot be sent: {err.errors()[0]['msg']}")
            report.failed += 1
            continue
        except ValueError as err:
            _fail(rt, hold, [f], Reason.BAD_URL, f"not a usable URL: {err}")
            report.failed += 1
            continue
        files.append(f)
        items.append(item)
    return files, items


def _send(
    rt: Runtime,
    report: BatchReport,
    claimed: ops.ClaimedBatch,
    files: list[ops.BatchFile],
    items: list[UploadItem],
    *,
    conversions: Conversions,
) -> None:
    """One request for the batch, and what each kind of answer means for its files."""
    attempt, hold = claimed.attempt, claimed.hold
    lease = _Lease()
    try:
        result = _upload(rt, items, [f.id for f in files], hold, lease)
    except ApiRateLimited as err:
        report.request_id = err.request_id
        until = rt.clock() + (pause_for(err.rate_limit, rate_limited=True) or 0.0)
        _defer(rt, report, hold, until, str(err))
        return
    except RetryableError as err:
        _retry_later(rt, report, claimed, err, files)
        return
    except OSError as err:
        # A file vanished or became unreadable after its check, before any byte was
        # sent: try again soon; the next run's checks fail that file alone.
        _retry_later(rt, report, claimed, FileChanged(str(err)), files)
        return
    except (ApiPayloadTooLarge, ApiValidationError) as err:
        report.error = str(err)
        if len(files) > 1:
            report.enqueue = ops.split_batch(
                rt.ledger, report.batch_id, now=rt.clock(), error=str(err), hold=hold
            )
            report.outcome = BatchOutcome.SPLIT
            return
        reason = Reason.TOO_LARGE if isinstance(err, ApiPayloadTooLarge) else Reason.API_REJECTED
        if files[0].is_url and reason is Reason.API_REJECTED:
            reason = Reason.BAD_URL  # the API could not fetch (or take) this URL
        _fail(rt, hold, files, reason, _api_message(err, "the API rejected the image"))
    except ApiAuthError as err:
        report.error = str(err)
        message = _api_message(err, "the API key was refused (401)")
        _fail(rt, hold, files, Reason.AUTH_FAILED, message)
    except PermanentError as err:
        report.error = str(err)
        _fail(rt, hold, files, Reason.UPLOAD_FAILED, _api_message(err, "the upload failed"))
    else:
        report.request_id = result.request_id
        report.uploaded = len(files)
        report.settled = True
        outcome = _outcome(rt, report.batch_id, attempt, files, result, conversions=conversions)
        try:
            report.enqueue = parked.record(rt, outcome, lease_until=lease.until)
        except parked.LedgerRefused as refused:
            report.error = f"the ledger did not take the outcome: {refused.error}"
            if refused.gave_up:
                report.uploaded, report.failed = 0, len(files)
                report.outcome = BatchOutcome.FAILED
            else:
                report.outcome = BatchOutcome.DEFERRED  # parked in Redis, never sent again
            return
        report.outcome = BatchOutcome.DONE
        return
    report.failed += len(files)
    report.outcome = BatchOutcome.FAILED


def _take_budget(rt: Runtime, report: BatchReport, hold: ops.Hold) -> bool:
    """One slot of the shared budget, or the batch deferred until there is one."""
    answer = rt.budget.try_acquire()
    if isinstance(answer, Wait):
        _defer(rt, report, hold, answer.until, f"waiting for the API budget ({answer.why})")
        return False
    return True


@dataclass(slots=True)
class _Lease:
    """Until when the run's claim holds its batch: renewed as its request starts."""

    until: float = 0.0


def _upload(
    rt: Runtime,
    items: list[UploadItem] | list[UrlItem],
    file_ids: list[int],
    hold: ops.Hold,
    lease: _Lease,
) -> UploadResult:
    """The request, its rate-limit headers fed back to the shared budget (answer or error).

    The files become `uploading` once this process holds a request slot, and only
    while its claim still holds the batch (`LeaseLost`): a batch waiting for a slot
    is not in flight, a worker killed while it waits leaves no file flagged as
    possibly sent, and a run whose batch was claimed again while it waited sends
    nothing. The lease is renewed there, to cover the request. For files, that
    write runs beside the request's first pieces (`_sent_once_marked`)."""
    try:
        with rt.slots.hold():  # INGEST_WORKER_CONCURRENCY requests in flight per worker
            now = rt.clock()
            lease.until = now + rt.settings.ingest.batch_lease

            def mark() -> None:
                ops.mark_uploading(rt.ledger, file_ids, now=now, hold=hold, lease_until=lease.until)

            if items and isinstance(items[0], UrlItem):
                mark()  # a short form body: nothing to overlap
                result = rt.client.upload_urls(items)
            else:
                result = _sent_once_marked(rt, cast(list[UploadItem], items), mark)
    except ApiError as err:
        if err.status is not None:
            rt.budget.follow(err.rate_limit, rate_limited=isinstance(err, ApiRateLimited))
        raise
    rt.budget.follow(result.rate_limit)
    return result


def _sent_once_marked(
    rt: Runtime, items: list[UploadItem], mark: Callable[[], None]
) -> UploadResult:
    """The files' request, whose body ends only once `mark` (their `uploading` write)
    is in the ledger: it runs in a thread while the first pieces go out, and the last
    piece waits for it (`UploadBody`'s `before_end`). A mark that fails (`LeaseLost`,
    the ledger out) is raised from the body, so the request never ends and no server
    stores it; the run goes on as if the mark had come first. Whatever happens, the
    mark has finished (or failed) before this returns or raises, so nothing the run
    writes next can be overtaken by it."""
    marking: Future[None] = Future()

    def run() -> None:
        try:
            mark()
        except BaseException as err:  # noqa: BLE001 - handed to the request's thread
            marking.set_exception(err)
        else:
            marking.set_result(None)

    threading.Thread(target=run, name="mark-uploading", daemon=True).start()
    try:
        return rt.client.upload(items, before_end=marking.result)
    except BaseException as err:
        failed = marking.exception()  # waits for the mark to finish
        if failed is not None and failed is not err:
            raise failed from None  # the claim is lost, or the ledger out: that decides
        raise


def _defer(rt: Runtime, report: BatchReport, hold: ops.Hold, until: float, error: str) -> None:
    """Wait in the ledger until `until`, giving the attempt back (quota, not a fault)."""
    report.error = error
    report.retry_at = until
    ops.release_batch(
        rt.ledger,
        report.batch_id,
        now=rt.clock(),
        error=error,
        next_attempt_at=until,
        refund_attempt=True,
        hold=hold,
    )
    report.outcome = BatchOutcome.DEFERRED


def _retry_later(
    rt: Runtime,
    report: BatchReport,
    claimed: ops.ClaimedBatch,
    err: RetryableError,
    files: list[ops.BatchFile],
) -> None:
    attempt, hold = claimed.attempt, claimed.hold
    settings = rt.settings.ingest
    policy = RetryPolicy(
        max_attempts=settings.upload_max_retries + 1,
        base=settings.retry_backoff_base,
        cap=settings.retry_backoff_max,
    )
    report.error = str(err)
    if isinstance(err, ApiError):
        report.request_id = err.request_id
    if isinstance(err, ApiTransportError) and err.maybe_sent:
        # No answer, but the server may have stored the images (a connection dropped
        # after the work, a read timeout): the next send may make a second copy, and
        # a file that fails now may still be on the server. Flagged before the
        # release, so a death in between leaves the lease's flagging to do it.
        ops.flag_possible_duplicates(rt.ledger, [f.id for f in files], now=rt.clock())
    if policy.exhausted(attempt):
        _fail(
            rt,
            hold,
            files,
            Reason.UPLOAD_FAILED,
            f"gave up after {attempt} attempts; last error: {err}",
        )
        report.failed += len(files)
        report.outcome = BatchOutcome.FAILED
        return
    wait = backoff(attempt, base=policy.base, cap=policy.cap)
    if isinstance(err, ApiRateLimited) and err.retry_after:
        wait = max(wait, err.retry_after)
    report.retry_at = rt.clock() + wait
    ops.release_batch(
        rt.ledger,
        report.batch_id,
        now=rt.clock(),
        error=str(err),
        next_attempt_at=report.retry_at,
        hold=hold,
    )
    report.outcome = BatchOutcome.DEFERRED


def _outcome(
    rt: Runtime,
    batch_id: int,
    attempt: int,
    files: list[ops.BatchFile],
    result: UploadResult,
    *,
    conversions: Conversions,
) -> parked.Outcome:
    """The accepted answer in the ledger's terms: each file's result, in input order,
    with the hash of the bytes it sent; recorded (or parked) by `worker.parked`."""
    settings = rt.settings.ingest
    now = rt.clock()
    results: list[parked.OutcomeFile] = []
    for f, image in zip(files, result.images, strict=True):
        d = decide(
            image.indexing_status,
            index_flag=f.index_flag,
            uploaded_at=now,
            now=now,
            previous_delay=None,
            initial_delay=settings.poll_initial_delay,
            max_delay=settings.poll_max_delay,
            deadline=settings.index_deadline,
        )
        results.append(
            parked.OutcomeFile(
                file_id=f.id,
                path=f.path,
                work_path=f.work_path,
                sha256=f.sha256,
                image_id=image.image_id,
                image_url=image.image_url,
                indexing_status=image.indexing_status,
                upload_timestamp=image.upload_timestamp,
                state=d.state,
                reason=d.reason,
                next_poll_at=d.next_poll_at,
                poll_delay=d.poll_delay,
                conversion=conversions.description(f.id),
                url=f.is_url,
            )
        )
    return parked.Outcome(
        batch_id=batch_id,
        request_id=result.request_id,
        uploaded_at=now,
        attempt=attempt,
        files=results,
        rehashed=_rehashed(files, result, conversions),
    )


def _rehashed(
    files: list[ops.BatchFile], result: UploadResult, conversions: Conversions
) -> list[ops.Rehashed]:
    """The files whose sent bytes differ from the ones hashed at their claim. A converted
    file sent a JPEG: its original, as hashed when it was converted, is compared instead."""
    changed: list[ops.Rehashed] = []
    for f, measured in zip(files, result.sent, strict=False):  # `sent` empty: not measured
        converted = conversions.get(f.id)
        sent = (
            measured
            if converted is None
            else SentBytes(sha256=converted.original_sha256, size=converted.original_size)
        )
        if (sent.sha256, sent.size) != (f.sha256, f.size):
            log.warning(
                "file_changed_after_claim",
                file_id=f.id,
                claimed_sha256=f.sha256,
                sent_sha256=sent.sha256,
                claimed_size=f.size,
                sent_size=sent.size,
            )
            changed.append(ops.Rehashed(f.id, f.sha256, sent.sha256, sent.size))
    return changed


def _fail(
    rt: Runtime, hold: ops.Hold, files: list[ops.BatchFile], reason: Reason, message: str
) -> None:
    """Fail `files` (while the run's claim holds their batch) and move their bytes."""
    ops.fail_files(rt.ledger, [f.id for f in files], reason, message, now=rt.clock(), hold=hold)
    for f in files:
        _move_failed(rt, f, reason, message)


def _move_failed(rt: Runtime, f: ops.BatchFile, reason: Reason, message: str) -> None:
    """The failed file to failed/ beside its reason file, recorded as its final path.

    When the outbox could place nothing, the row keeps no final path and its
    bytes stay in the work area: the watcher's recovery (and, for an indexing
    failure, the poll sweep) moves them later.
    """
    if f.is_url:
        return  # no bytes to move: a URL row's reason is in the ledger only
    error_file = file_failed(
        rt.settings.ingest,
        work_path=f.work_path,
        rel_path=f.path,
        file_id=f.id,
        reason=reason,
        message=message,
        extra={"sha256": f.sha256},
        in_place=not in_work_area(rt.settings.ingest, f.work_path),
    )
    if error_file is None:
        log.warning("failed_file_not_moved", file_id=f.id, reason=reason)
        return
    ops.set_final_path(rt.ledger, [(f.id, error_file)], now=rt.clock())


def _api_message(err: Exception, fallback: str) -> str:
    if isinstance(err, ApiError):
        detail = err.message or fallback
        parts = [detail]
        if err.param:
            parts.append(f"(param {err.param})")
        if err.request_id:
            parts.append(f"[request {err.request_id}]")
        return " ".join(parts)
    return str(err) or fallback

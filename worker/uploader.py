"""upload_batch: the work behind the Celery task of the same name, without Celery.

One batch, one multipart request:
    claim (lease) -> check each file -> take a slot of the shared API budget
    -> mark uploading -> POST -> feed the rate-limit headers back to the budget
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
after a worker died flags the files whose request may have gone out.

The hash recorded is the hash of the bytes sent: the client hashes each file as
it streams it, and a file that changed after its claim gets the sent bytes'
sha256 and size in the same write as its result. Rows recorded as copies of it
by the old hash are copies of something it never sent: one of them is queued
again (in a new batch, enqueued with the report) and the others follow it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from reka_ingest.core.errors import (
    ApiAuthError,
    ApiError,
    ApiPayloadTooLarge,
    ApiRateLimited,
    ApiTransportError,
    ApiValidationError,
    FileRejected,
    PermanentError,
    RetryableError,
)
from reka_ingest.core.logs import get_logger
from reka_ingest.core.states import BatchOutcome, FileState, Reason
from reka_ingest.files.outbox import (
    file_done,
    file_failed,
    in_work_area,
    remove_empty_claim_folders,
)
from reka_ingest.files.validate import check_image
from reka_ingest.ledger import uploads as ops
from reka_ingest.ledger.intake import create_batches
from reka_ingest.reka.models import UploadItem, UploadResult
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


def upload_batch(rt: Runtime, batch_id: int) -> BatchReport:
    report = BatchReport(batch_id)
    claimed = ops.claim_batch(
        rt.ledger, batch_id, now=rt.clock(), lease=rt.settings.ingest.batch_lease
    )
    if claimed is None:
        return report
    if claimed.outcome_unknown:
        log.warning("batch_outcome_unknown", batch_id=batch_id, attempt=claimed.attempt)
    report.files = len(claimed.files)
    report.bytes = sum(f.size for f in claimed.files)
    files, items = _prepare(rt, claimed.files, report)
    if files and not _take_budget(rt, report):
        return report  # deferred in the ledger until the shared budget has room
    if files:
        ops.mark_uploading(rt.ledger, [f.id for f in files], now=rt.clock())
        _send(rt, report, claimed.attempt, files, items)
    else:
        report.outcome = BatchOutcome.FAILED if claimed.files else BatchOutcome.DONE
    if report.outcome not in (BatchOutcome.DEFERRED, BatchOutcome.SPLIT):
        ops.finish_batch(
            rt.ledger,
            batch_id,
            now=rt.clock(),
            request_id=report.request_id,
            final_paths=report.final_paths,
        )
        remove_empty_claim_folders(rt.settings.ingest, (f.work_path for f in claimed.files))
    return report


def _prepare(
    rt: Runtime, claimed: list[ops.BatchFile], report: BatchReport
) -> tuple[list[ops.BatchFile], list[UploadItem]]:
    """Check each file and build its upload item; a file that fails here fails alone."""
    files: list[ops.BatchFile] = []
    items: list[UploadItem] = []
    for f in claimed:
        try:
            content_type = check_image(
                Path(f.work_path), max_bytes=rt.settings.ingest.max_image_bytes
            )
            item = UploadItem(
                path=Path(f.work_path),
                filename=Path(f.path).name,
                content_type=content_type,
                metadata=dict(f.sidecar or {}),
                index=f.index_flag,
            )
        except FileRejected as rejected:
            _fail(rt, [f], Reason(rejected.reason), rejected.message)
            report.failed += 1
            continue
        except ValidationError as err:
            message = f"metadata cannot be sent: {err.errors()[0]['msg']}"
            _fail(rt, [f], Reason.BAD_SIDECAR, message)
            report.failed += 1
            continue
        except Exception as err:  # an unforeseen error is this file's, not the batch's
            log.exception("upload.file_isolated", file_id=f.id, path=f.path)
            _fail(rt, [f], Reason.INTAKE_FAILED, f"cannot be checked: {type(err).__name__}: {err}")
            report.failed += 1
            continue
        files.append(f)
        items.append(item)
    return files, items


def _send(
    rt: Runtime,
    report: BatchReport,
    attempt: int,
    files: list[ops.BatchFile],
    items: list[UploadItem],
) -> None:
    """One request for the batch, and what each kind of answer means for its files."""
    try:
        result = _upload(rt, items)
    except ApiRateLimited as err:
        report.request_id = err.request_id
        until = rt.clock() + (pause_for(err.rate_limit, rate_limited=True) or 0.0)
        _defer(rt, report, until, str(err))
        return
    except RetryableError as err:
        _retry_later(rt, report, attempt, err, files)
        return
    except OSError as err:
        # A file vanished or became unreadable after its check, before any byte was
        # sent: try again soon; the next run's checks fail that file alone.
        _retry_later(rt, report, attempt, FileChanged(str(err)), files)
        return
    except (ApiPayloadTooLarge, ApiValidationError) as err:
        report.error = str(err)
        if len(files) > 1:
            report.enqueue = ops.split_batch(
                rt.ledger, report.batch_id, now=rt.clock(), error=str(err)
            )
            report.outcome = BatchOutcome.SPLIT
            return
        reason = Reason.TOO_LARGE if isinstance(err, ApiPayloadTooLarge) else Reason.API_REJECTED
        _fail(rt, files, reason, _api_message(err, "the API rejected the image"))
    except ApiAuthError as err:
        report.error = str(err)
        _fail(rt, files, Reason.AUTH_FAILED, _api_message(err, "the API key was refused (401)"))
    except PermanentError as err:
        report.error = str(err)
        _fail(rt, files, Reason.UPLOAD_FAILED, _api_message(err, "the upload failed"))
    else:
        report.request_id = result.request_id
        report.final_paths, requeued = _record_results(rt, files, result)
        report.enqueue = _batch_requeued(rt, requeued)
        report.uploaded = len(files)
        report.outcome = BatchOutcome.DONE
        return
    report.failed += len(files)
    report.outcome = BatchOutcome.FAILED


def _take_budget(rt: Runtime, report: BatchReport) -> bool:
    """One slot of the shared budget, or the batch deferred until there is one."""
    answer = rt.budget.try_acquire()
    if isinstance(answer, Wait):
        _defer(rt, report, answer.until, f"waiting for the API budget ({answer.why})")
        return False
    return True


def _upload(rt: Runtime, items: list[UploadItem]) -> UploadResult:
    """The request, its rate-limit headers fed back to the shared budget (answer or error)."""
    try:
        result = rt.client.upload(items)
    except ApiError as err:
        if err.status is not None:
            rt.budget.follow(err.rate_limit, rate_limited=isinstance(err, ApiRateLimited))
        raise
    rt.budget.follow(result.rate_limit)
    return result


def _defer(rt: Runtime, report: BatchReport, until: float, error: str) -> None:
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
    )
    report.outcome = BatchOutcome.DEFERRED


def _retry_later(
    rt: Runtime,
    report: BatchReport,
    attempt: int,
    err: RetryableError,
    files: list[ops.BatchFile],
) -> None:
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
        rt.ledger, report.batch_id, now=rt.clock(), error=str(err), next_attempt_at=report.retry_at
    )
    report.outcome = BatchOutcome.DEFERRED


def _record_results(
    rt: Runtime, files: list[ops.BatchFile], result: UploadResult
) -> tuple[list[tuple[int, str]], list[ops.Requeued]]:
    """Record each result, then move the files; returns where each went (recorded with
    the batch's finish: a death before it leaves the moves to the watcher's recovery)
    and the rows queued again because a file sent other bytes than it was hashed by."""
    settings = rt.settings.ingest
    now = rt.clock()
    results: list[ops.Uploaded] = []
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
            ops.Uploaded(
                file_id=f.id,
                image_id=image.image_id,
                image_url=image.image_url,
                indexing_status=image.indexing_status,
                upload_timestamp=image.upload_timestamp,
                state=d.state,
                reason=d.reason,
                next_poll_at=d.next_poll_at,
                poll_delay=d.poll_delay,
            )
        )
    requeued = ops.record_uploaded(
        rt.ledger,
        results,
        request_id=result.request_id,
        now=now,
        rehashed=_rehashed(files, result),
    )
    moves: list[tuple[int, str]] = []
    for f, r in zip(files, results, strict=True):
        if r.state == FileState.FAILED:
            _move_failed(rt, f, r.reason or Reason.INDEXING_FAILED, "indexing failed at upload")
            continue
        final = file_done(
            settings,
            work_path=f.work_path,
            rel_path=f.path,
            file_id=f.id,
            in_place=not in_work_area(rt.settings.ingest, f.work_path),
        )
        if final is not None:
            moves.append((f.id, final))
    return moves, requeued


def _rehashed(files: list[ops.BatchFile], result: UploadResult) -> list[ops.Rehashed]:
    """The files whose sent bytes differ from the ones hashed at their claim."""
    changed: list[ops.Rehashed] = []
    for f, sent in zip(files, result.sent, strict=False):  # `sent` empty: not measured
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


def _batch_requeued(rt: Runtime, requeued: list[ops.Requeued]) -> list[int]:
    """New batches for rows queued again (within the batch limits); their ids, to enqueue.

    Nothing else batches queued rows while the watcher runs (its start adopts
    any left unbatched, should this process die first); the beat sweep resends
    a batch whose message is lost.
    """
    settings = rt.settings.ingest
    groups: list[list[int]] = []
    nbytes = 0
    for r in requeued:
        if not groups or (
            len(groups[-1]) >= settings.batch_max_files
            or nbytes + r.size > settings.batch_max_bytes
        ):
            groups.append([])
            nbytes = 0
        groups[-1].append(r.file_id)
        nbytes += r.size
    return create_batches(rt.ledger, groups, now=rt.clock()) if groups else []


def _fail(rt: Runtime, files: list[ops.BatchFile], reason: Reason, message: str) -> None:
    ops.fail_files(rt.ledger, [f.id for f in files], reason, message, now=rt.clock())
    for f in files:
        _move_failed(rt, f, reason, message)


def _move_failed(rt: Runtime, f: ops.BatchFile, reason: Reason, message: str) -> None:
    """The failed file to failed/ beside its reason file, recorded as its final path.

    When the outbox could place nothing, the row keeps no final path and its
    bytes stay in the work area: the watcher's recovery (and, for an indexing
    failure, the poll sweep) moves them later.
    """
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

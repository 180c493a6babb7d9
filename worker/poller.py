"""poll_due: the work behind the beat-driven indexing sweep, without Celery.

Takes the `indexing` rows whose poll time has come (pushing that time out as a
lease), reads their images from List Images where a few pages cost fewer
requests than a Get per row (`worker.poll_list`), asks Get Image for the others
with bounded concurrency on the process's one client, and records what came
back. "Not yet" is a time in the ledger, never a sleep: each row's next poll is
further out (initial delay doubling to a cap), until the deadline turns it into
`failed` / `indexing_timeout`.

A file whose indexing failed (status 3, a 404, the deadline) was sent, so its
bytes went where uploaded files go (done/, kept in the work area, deleted, or
left in place for a backfill). Each sweep ends by settling such files: their
bytes move to failed/ beside `NAME.error.json`, as every failure's do, so
`reka-ingest retry` finds them there. One file at a time: a file that cannot
be moved is logged and left for a later sweep, never stopping the others.

The Get Image calls run at a lower CPU priority (`POLL_NICENESS`, their threads
only): a sweep shares the worker's CPU with uploads, and when CPU is short the
requests in flight come first; an idle CPU still runs the poll at full speed.
The thread that writes the ledger keeps its priority, so a lock it holds never
waits behind the uploads it would hold up.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from reka_ingest.core.constants import (
    POLL_BATCH_LIMIT,
    POLL_LEASE_SECONDS,
    POLL_ROUNDS_PER_SWEEP,
    POLL_SWEEP_SHARE,
    SETTLE_LIMIT,
)
from reka_ingest.core.errors import ApiNotFound, IngestError
from reka_ingest.core.logs import get_logger
from reka_ingest.core.settings import IngestSettings
from reka_ingest.core.states import FileState, Reason
from reka_ingest.files.outbox import ERROR_SUFFIX, file_failed, in_work_area
from reka_ingest.ledger.polling import (
    DuePoll,
    PollOutcome,
    UnsettledFailure,
    claim_due_polls,
    record_polls,
    record_settled,
    take_unsettled_failures,
)
from reka_ingest.reka.models import Image
from worker.backoff import next_poll_delay
from worker.indexing import decide
from worker.outage import through_outage
from worker.poll_list import listed_images
from worker.runtime import Runtime

log = get_logger(__name__)

# Added to the nice value of each Get Image thread (Linux: per thread).
POLL_NICENESS = 10


@dataclass(frozen=True, slots=True)
class PollReport:
    polled: int
    indexed: int
    failed: int
    waiting: int
    errors: int
    settled: int = 0  # failed files whose bytes (or reason file) went to failed/ this sweep


def poll_due(
    rt: Runtime, *, limit: int = POLL_BATCH_LIMIT, rounds: int = POLL_ROUNDS_PER_SWEEP
) -> PollReport:
    """Poll what is due, `limit` rows at a time, until a claim is not full, `rounds`
    ran, or half the sweep interval has passed."""
    total = PollReport(0, 0, 0, 0, 0)
    stop_at = time.monotonic() + rt.settings.ingest.poll_sweep_interval * POLL_SWEEP_SHARE
    for i in range(rounds):
        if i and time.monotonic() >= stop_at:
            break
        report = _poll_round(rt, limit)
        total = PollReport(
            polled=total.polled + report.polled,
            indexed=total.indexed + report.indexed,
            failed=total.failed + report.failed,
            waiting=total.waiting + report.waiting,
            errors=total.errors + report.errors,
        )
        if report.polled < limit:
            break
    return replace(total, settled=settle_failures(rt))


def _poll_round(rt: Runtime, limit: int) -> PollReport:
    due = claim_due_polls(rt.ledger, now=rt.clock(), limit=limit, lease=POLL_LEASE_SECONDS)
    if not due:
        return PollReport(0, 0, 0, 0, 0)
    listed = listed_images(rt, due)  # many at once, where that is cheaper (worker.poll_list)
    outcomes = [_decided(rt, d, listed[d.image_id]) for d in due if d.image_id in listed]
    rest = [d for d in due if d.image_id not in listed]
    if rest:
        workers = min(rt.settings.ingest.poll_concurrency, len(rest))
        with ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="poll", initializer=_lower_priority
        ) as pool:
            outcomes += pool.map(lambda d: _poll_one(rt, d), rest)
    # The rows are this round's until the lease ends: a passing outage is waited
    # out (well within it), not left to hold them for the whole lease.
    deadline = time.monotonic() + min(
        rt.settings.ingest.ledger_retry_seconds, POLL_LEASE_SECONDS / 2
    )
    through_outage(rt.ledger, deadline, lambda: record_polls(rt.ledger, outcomes, now=rt.clock()))
    states = [o.state for o in outcomes]
    report = PollReport(
        polled=len(outcomes),
        indexed=states.count(FileState.INDEXED) + states.count(FileState.STORED),
        failed=states.count(FileState.FAILED),
        waiting=states.count(FileState.INDEXING),
        errors=sum(
            1 for o in outcomes if o.state == FileState.INDEXING and o.indexing_status is None
        ),
    )
    log.info(
        "poll_sweep",
        polled=report.polled,
        indexed=report.indexed,
        failed=report.failed,
        waiting=report.waiting,
        errors=report.errors,
    )
    return report


def _lower_priority() -> None:
    """This thread's nice value up by POLL_NICENESS (a thread may always lower its own
    priority; on Linux the value is the thread's, not the process's)."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + POLL_NICENESS)
    except (AttributeError, OSError) as err:  # no such call here: the poll runs as it is
        log.debug("poll_priority_unchanged", error=str(err))


def _poll_one(rt: Runtime, due: DuePoll) -> PollOutcome:
    settings = rt.settings.ingest
    try:
        image = rt.client.get(due.image_id)
    except ApiNotFound as err:
        return PollOutcome(
            file_id=due.file_id,
            state=FileState.FAILED,
            indexing_status=None,
            image_url=None,
            request_id=err.request_id,
            reason=Reason.INDEXING_FAILED,
            message=f"Reka no longer knows image {due.image_id} (404)",
        )
    except IngestError as err:
        # Any error while polling is "ask again later", until the deadline.
        now = rt.clock()
        if now - due.uploaded_at >= settings.index_deadline:
            return PollOutcome(
                file_id=due.file_id,
                state=FileState.FAILED,
                indexing_status=None,
                image_url=None,
                request_id=getattr(err, "request_id", None),
                reason=Reason.INDEXING_TIMEOUT,
                message=f"no indexing result before the deadline; last error: {err}",
            )
        delay = next_poll_delay(
            due.poll_delay, initial=settings.poll_initial_delay, maximum=settings.poll_max_delay
        )
        log.warning("poll_error", file_id=due.file_id, image_id=due.image_id, error=str(err))
        return PollOutcome(
            file_id=due.file_id,
            state=FileState.INDEXING,
            indexing_status=None,
            image_url=None,
            request_id=getattr(err, "request_id", None),
            next_poll_at=now + delay,
            poll_delay=delay,
        )
    return _decided(rt, due, image)


def _decided(rt: Runtime, due: DuePoll, image: Image) -> PollOutcome:
    """What the image's indexing status means for its row."""
    settings = rt.settings.ingest
    now = rt.clock()
    d = decide(
        image.indexing_status,
        index_flag=due.index_flag,
        uploaded_at=due.uploaded_at,
        now=now,
        previous_delay=due.poll_delay,
        initial_delay=settings.poll_initial_delay,
        max_delay=settings.poll_max_delay,
        deadline=settings.index_deadline,
    )
    return PollOutcome(
        file_id=due.file_id,
        state=d.state,
        indexing_status=image.indexing_status,
        image_url=image.image_url,
        request_id=image.request_id,
        reason=d.reason,
        message=d.message,
        next_poll_at=d.next_poll_at,
        poll_delay=d.poll_delay,
    )


def settle_failures(rt: Runtime, *, limit: int = SETTLE_LIMIT) -> int:
    """Move the bytes of files whose indexing failed to failed/ with their reason file,
    and record that file as their `final_path`; write the reason file of any failed
    file whose bytes are in failed/ without one (a full disk refused it); returns
    how many were settled.

    Each file alone: one that cannot be moved (a name the filesystem refuses, a
    folder in the way) is logged and left failed with its bytes where they were,
    for a later sweep; one placed without its reason file is recorded where its
    bytes went, for a later sweep to write it.
    """
    settings = rt.settings.ingest
    pending = take_unsettled_failures(
        rt.ledger,
        settled_suffix=ERROR_SUFFIX,
        now=rt.clock(),
        lease=POLL_LEASE_SECONDS,
        limit=limit,
    )
    settled: list[tuple[int, str]] = []
    unsettled: list[int] = []
    for f in pending:
        flog = log.bind(file_id=f.file_id, reason=f.reason, source=f.final_path or f.work_path)
        try:
            error_file = _to_failed(settings, f)
        except (OSError, ValueError) as err:  # the outbox says it never raises; one file anyway
            flog.warning("failed_file_not_moved", error=str(err))
            error_file = None
        else:
            if error_file is None:
                flog.warning("failed_file_not_moved", error="the outbox could not place it")
        if error_file is None:
            unsettled.append(f.file_id)
        else:
            settled.append((f.file_id, error_file))
    record_settled(rt.ledger, settled, unsettled, now=rt.clock())
    done = sum(path.endswith(ERROR_SUFFIX) for _, path in settled)
    if pending:
        log.info("failed_files_settled", settled=done, left=len(pending) - done)
    return done


def _to_failed(settings: IngestSettings, f: UnsettledFailure) -> str | None:
    """One file's bytes into failed/ (from done/ or the work area) beside its reason
    file, whose path it returns (None: nothing could be placed, the bytes are where
    they were). A file recorded in place stays put; only the reason file is written."""
    in_place = not in_work_area(settings, f.work_path)
    source = f.final_path if f.final_path and not in_place else f.work_path
    return file_failed(
        settings,
        work_path=source,
        rel_path=f.path,
        file_id=f.file_id,
        reason=f.reason,
        message=f.message or "",
        extra={"sha256": f.sha256, "image_id": f.image_id},
        in_place=in_place,
    )

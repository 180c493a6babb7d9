"""poll_due: the work behind the beat-driven indexing sweep, without Celery.

Takes the `indexing` rows whose poll time has come (pushing that time out as a
lease), asks Get Image for each with bounded concurrency on the process's one
client, and records what came back. "Not yet" is a time in the ledger, never a
sleep: each row's next poll is further out (initial delay doubling to a cap),
until the deadline turns it into `failed` / `indexing_timeout`.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from worker.backoff import next_poll_delay
from worker.errors import ApiNotFound, IngestError
from worker.indexing import decide
from worker.ledger.polling import DuePoll, PollOutcome, claim_due_polls, record_polls
from worker.logs import get_logger
from worker.runtime import Runtime
from worker.states import FileState, Reason

log = get_logger(__name__)

POLL_LEASE_SECONDS = 120.0  # a sweep that dies leaves its rows to the next one after this
POLL_BATCH_LIMIT = 500  # rows taken per claim
# Claims per sweep while they come back full: one claim of 500 per 3 s sweep capped
# indexing at ~170 files/s, well under what uploads reach. Two bounds keep a sweep
# short: a number of rounds, and no new round after half the sweep interval, so the
# next sweep does not start beside it and take the worker's other upload process.
POLL_ROUNDS_PER_SWEEP = 10
POLL_SWEEP_SHARE = 0.5


@dataclass(frozen=True, slots=True)
class PollReport:
    polled: int
    indexed: int
    failed: int
    waiting: int
    errors: int


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
    return total


def _poll_round(rt: Runtime, limit: int) -> PollReport:
    due = claim_due_polls(rt.ledger, now=rt.clock(), limit=limit, lease=POLL_LEASE_SECONDS)
    if not due:
        return PollReport(0, 0, 0, 0, 0)
    workers = min(rt.settings.ingest.poll_concurrency, len(due))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="poll") as pool:
        outcomes = list(pool.map(lambda d: _poll_one(rt, d), due))
    record_polls(rt.ledger, outcomes, now=rt.clock())
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

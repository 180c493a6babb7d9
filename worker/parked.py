"""The outcome of an upload the server accepted, recorded whatever the ledger does.

Once Reka has answered 200 the images are on the server: sending them again
because our own database hiccupped would make a second copy. So the answer is
kept as an `Outcome` (every result, the request id, the rehashed files, and
how far its recording got) and `settle` writes it to the ledger:

- a passing outage (`Ledger.is_outage`: a PostgreSQL restart, a lost
  connection, SQLite locked) is retried with backoff for up to
  INGEST_LEDGER_RETRY_SECONDS, never past the batch's lease;
- when that runs out, or the ledger refuses the data itself, the outcome is
  **parked** in Redis (the broker every worker sees), in one hash keyed by
  batch id, as JSON: ids, paths, image ids and URLs, states, times, the request
  id; never bytes, never a key. The batch stays `uploading` in the ledger.
- a parked outcome is applied by beat's next sweep (`drain`, before it lists
  batches to send) or by the next `upload_batch` of that batch (`take_over`,
  before anything is sent). One Redis lock per batch lets one of them in.
- a data error counts toward the batch's attempts (`count_attempt`); once
  they are used (INGEST_UPLOAD_MAX_RETRIES) the files fail with
  `record_failed`, each message naming the image id the server holds.

If Redis cannot take the outcome either, the batch's lease is the last
resort: it runs out, the batch is taken again and its files flagged
`possible_duplicate` (and the claim fails them once its attempts are used).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import redis

from reka_ingest.core.logs import get_logger
from reka_ingest.core.states import FileState, Reason
from reka_ingest.files.outbox import (
    file_done,
    file_failed,
    in_work_area,
    remove_empty_claim_folders,
)
from reka_ingest.ledger import uploads as ops
from reka_ingest.ledger.intake import create_batches, pack
from worker.backoff import RetryPolicy, backoff
from worker.budget import redis_client
from worker.outage import through_outage
from worker.runtime import Runtime

log = get_logger(__name__)

PARKED_KEY: Final = "reka_ingest:parked_outcomes"  # hash: batch id -> Outcome JSON
LOCK_KEY: Final = "reka_ingest:parked_outcomes:lock:{batch_id}"
FORMAT: Final = 1
# Never retry so close to the lease's end that another worker could retake the batch.
LEASE_MARGIN: Final = 5.0
# Outcomes one sweep applies at most (the rest wait for the next sweep).
DRAIN_LIMIT: Final = 200
_ERROR_CHARS: Final = 1000


@dataclass
class OutcomeFile:
    """One file's result, and where its bytes are (to move them once recorded)."""

    file_id: int
    path: str
    work_path: str
    sha256: str | None
    image_id: str
    image_url: str
    indexing_status: int
    upload_timestamp: float
    state: str
    reason: str | None = None
    next_poll_at: float | None = None
    poll_delay: float | None = None
    conversion: str | None = None  # sent as a JPEG made from it: how (`HEIF -> JPEG ...`)
    url: bool = False  # a URL row (an image URL list's line): no bytes to move


@dataclass
class Outcome:
    """An accepted upload of one batch, and how far its recording got."""

    batch_id: int
    request_id: str | None
    uploaded_at: float  # the `now` its results were decided with
    attempt: int  # the claim's attempt that sent it
    files: list[OutcomeFile]
    rehashed: list[ops.Rehashed] = field(default_factory=list)
    recorded: bool = False  # record_uploaded committed
    moved: bool = False  # bytes placed in done/ (failed/); final_paths known
    final_paths: list[tuple[int, str]] = field(default_factory=list)
    requeued: list[tuple[int, int]] = field(default_factory=list)  # (file id, size) to batch
    failures: int = 0  # data errors so far (the ledger's attempts count them too)
    next_try_at: float | None = None  # a data error's backoff
    last_error: str | None = None
    parked_at: float | None = None

    def to_json(self) -> str:
        body = asdict(self)
        body["v"] = FORMAT
        return json.dumps(body, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes | str) -> Outcome:
        body: dict[str, Any] = json.loads(raw)
        body.pop("v", None)
        body["files"] = [OutcomeFile(**f) for f in body["files"]]
        body["rehashed"] = [ops.Rehashed(**r) for r in body["rehashed"]]
        body["final_paths"] = [(int(i), str(p)) for i, p in body["final_paths"]]
        body["requeued"] = [(int(i), int(n)) for i, n in body["requeued"]]
        return cls(**body)

    def results(self) -> list[ops.Uploaded]:
        return [
            ops.Uploaded(
                file_id=f.file_id,
                image_id=f.image_id,
                image_url=f.image_url,
                indexing_status=f.indexing_status,
                upload_timestamp=f.upload_timestamp,
                state=FileState(f.state),
                reason=Reason(f.reason) if f.reason else None,
                next_poll_at=f.next_poll_at,
                poll_delay=f.poll_delay,
                conversion=f.conversion,
            )
            for f in self.files
        ]


class LedgerRefused(Exception):
    """The outcome could not be recorded now; it is parked (or failed, `gave_up`)."""

    def __init__(self, error: BaseException, *, gave_up: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.gave_up = gave_up


# --- Redis ---------------------------------------------------------------------

_clients: dict[tuple[int, str], redis.Redis[bytes]] = {}
_clients_lock = threading.Lock()


def broker(rt: Runtime) -> redis.Redis[bytes]:
    """This process's connection to the broker's Redis (a forked child makes its own)."""
    key = (os.getpid(), rt.settings.ingest.broker_url)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = redis_client(key[1])
        return client


def parked_ids(rt: Runtime) -> list[int]:
    """The batch ids with a parked outcome."""
    return sorted(int(k) for k in broker(rt).hkeys(PARKED_KEY))


def get_parked(rt: Runtime, batch_id: int) -> Outcome | None:
    """The batch's parked outcome; an entry that cannot be read is logged and dropped
    (the batch's lease is then the fallback: taken again, its files flagged)."""
    raw = broker(rt).hget(PARKED_KEY, str(batch_id))
    if raw is None:
        return None
    try:
        return Outcome.from_json(raw)
    except (ValueError, TypeError, KeyError) as err:
        log.error("parked_outcome_unreadable", batch_id=batch_id, error=str(err), raw=raw[:2000])
        _drop(rt, batch_id)
        return None


def _put(rt: Runtime, outcome: Outcome) -> None:
    broker(rt).hset(PARKED_KEY, str(outcome.batch_id), outcome.to_json())


def _drop(rt: Runtime, batch_id: int) -> None:
    broker(rt).hdel(PARKED_KEY, str(batch_id))


@contextlib.contextmanager
def _locked(rt: Runtime, batch_id: int) -> Iterator[bool]:
    """Whether this run holds the batch's parked outcome (one applier at a time)."""
    ttl = rt.settings.ingest.ledger_retry_seconds + 120
    lock = broker(rt).lock(LOCK_KEY.format(batch_id=batch_id), timeout=ttl, blocking=False)
    got = bool(lock.acquire())
    try:
        yield got
    finally:
        if got:
            with contextlib.suppress(redis.exceptions.LockError):
                lock.release()


# --- recording -------------------------------------------------------------------


def record(rt: Runtime, outcome: Outcome, *, lease_until: float) -> list[int]:
    """Record a fresh outcome (retrying an outage while the lease allows); the new
    batch ids to enqueue. Raises `LedgerRefused` once it is parked (or failed)."""
    window = min(
        rt.settings.ingest.ledger_retry_seconds,
        max(0.0, lease_until - rt.clock() - LEASE_MARGIN),
    )
    try:
        return settle(rt, outcome, retry_for=window)
    except Exception as err:
        gave_up = _after_failure(rt, outcome, err)
        raise LedgerRefused(err, gave_up=gave_up) from err


def settle(rt: Runtime, outcome: Outcome, *, retry_for: float) -> list[int]:
    """Write what is left of `outcome` to the ledger, move its files, finish its batch;
    returns the new batch ids to enqueue. An outage is retried for `retry_for` seconds;
    any other error (or the outage outlasting it) is raised, `outcome` keeping its progress.
    """
    deadline = time.monotonic() + retry_for
    if not outcome.recorded:
        requeued = through_outage(
            rt.ledger,
            deadline,
            lambda: ops.record_uploaded(
                rt.ledger,
                outcome.results(),
                request_id=outcome.request_id,
                now=outcome.uploaded_at,
                rehashed=outcome.rehashed,
            ),
        )
        outcome.recorded = True
        outcome.requeued = [(r.file_id, r.size) for r in requeued]
    if not outcome.moved:
        outcome.final_paths = _place(rt, outcome)
        outcome.moved = True
    enqueue: list[int] = []
    if outcome.requeued:
        pending = [ops.Requeued(i, n) for i, n in outcome.requeued]
        enqueue = through_outage(rt.ledger, deadline, lambda: batch_requeued(rt, pending))
        outcome.requeued = []
    through_outage(
        rt.ledger,
        deadline,
        lambda: ops.finish_batch(
            rt.ledger,
            outcome.batch_id,
            now=rt.clock(),
            request_id=outcome.request_id,
            final_paths=outcome.final_paths,
        ),
    )
    remove_empty_claim_folders(rt.settings.ingest, (f.work_path for f in outcome.files))
    return enqueue


def _after_failure(rt: Runtime, outcome: Outcome, err: BaseException) -> bool:
    """Park `outcome` after `err`; a data error spends an attempt, and the last one
    fails its files instead. Returns whether they failed."""
    outcome.last_error = f"{type(err).__name__}: {err}"[:_ERROR_CHARS]
    outcome.parked_at = outcome.parked_at or rt.clock()
    if not rt.ledger.is_outage(err):
        outcome.failures += 1
        settings = rt.settings.ingest
        policy = RetryPolicy(
            max_attempts=settings.upload_max_retries + 1,
            base=settings.retry_backoff_base,
            cap=settings.retry_backoff_max,
        )
        try:
            attempts = ops.count_attempt(
                rt.ledger,
                outcome.batch_id,
                now=rt.clock(),
                error=f"the ledger refused the upload's outcome: {outcome.last_error}",
            )
        except Exception as count_err:  # noqa: BLE001 - counted in the parked record then
            log.warning("attempt_not_counted", batch_id=outcome.batch_id, error=str(count_err))
            attempts = outcome.attempt + outcome.failures
        attempts = max(attempts, outcome.attempt + outcome.failures)
        if policy.exhausted(attempts) and _give_up(rt, outcome, attempts):
            return True
        outcome.next_try_at = rt.clock() + backoff(
            min(outcome.failures, 30), base=policy.base, cap=policy.cap
        )
    log.warning(
        "outcome_parked",
        batch_id=outcome.batch_id,
        files=len(outcome.files),
        request_id=outcome.request_id,
        outage=rt.ledger.is_outage(err),
        failures=outcome.failures,
        error=outcome.last_error,
    )
    try:
        _put(rt, outcome)
    except redis.RedisError as redis_err:
        # Nowhere to keep it: the lease runs out and the claim flags the files.
        log.error(
            "outcome_lost",
            batch_id=outcome.batch_id,
            request_id=outcome.request_id,
            image_ids=[f.image_id for f in outcome.files],
            error=str(redis_err),
        )
    return False


def _give_up(rt: Runtime, outcome: Outcome, attempts: int) -> bool:
    """Fail the outcome's files with `record_failed` (each message naming its image id),
    move them to failed/ and finish the batch; False when the ledger refuses that too."""
    now = rt.clock()
    failed: list[tuple[int, str]] = []
    try:
        for f in outcome.files:
            message = (
                f"uploaded, but not recorded: the server stored it as image {f.image_id}"
                f" (request {outcome.request_id or 'unknown'}), and the ledger refused that"
                f" answer {outcome.failures} times ({attempts} attempts in all); last error:"
                f" {outcome.last_error}. The image is on the server: sending the file again"
                " makes a second copy."
            )
            ops.fail_files(rt.ledger, [f.file_id], Reason.RECORD_FAILED, message, now=now)
            if f.url:
                continue  # no bytes to move
            error_file = file_failed(
                rt.settings.ingest,
                work_path=f.work_path,
                rel_path=f.path,
                file_id=f.file_id,
                reason=Reason.RECORD_FAILED,
                message=message,
                extra={"sha256": f.sha256, "image_id": f.image_id},
                in_place=not in_work_area(rt.settings.ingest, f.work_path),
            )
            if error_file is not None:
                failed.append((f.file_id, error_file))
        ops.finish_batch(
            rt.ledger,
            outcome.batch_id,
            now=now,
            request_id=None,
            final_paths=failed,
        )
    except Exception as err:  # noqa: BLE001 - stays parked; the next try gives up again
        log.error("record_failed_not_recorded", batch_id=outcome.batch_id, error=str(err))
        return False
    remove_empty_claim_folders(rt.settings.ingest, (f.work_path for f in outcome.files))
    with contextlib.suppress(redis.RedisError):
        _drop(rt, outcome.batch_id)
    log.error(
        "outcome_not_recorded",
        batch_id=outcome.batch_id,
        files=len(outcome.files),
        request_id=outcome.request_id,
        image_ids=[f.image_id for f in outcome.files],
        attempts=attempts,
        error=outcome.last_error,
    )
    return True


# --- applying parked outcomes ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Applied:
    """What applying one parked outcome did."""

    batch_id: int
    files: int
    recorded: bool  # in the ledger now (or failed: `gave_up`)
    gave_up: bool = False
    busy: bool = False  # another run holds it
    error: str | None = None
    enqueue: tuple[int, ...] = ()


def take_over(rt: Runtime, batch_id: int) -> Applied | None:
    """Before a batch is claimed: apply its parked outcome, if it has one (None: it
    has not, send it as usual). Raises `redis.RedisError` when that cannot be known."""
    if not broker(rt).hexists(PARKED_KEY, str(batch_id)):
        return None
    return _apply_one(rt, batch_id, retry_for=rt.settings.ingest.ledger_retry_seconds, due=False)


def drain(rt: Runtime, *, limit: int = DRAIN_LIMIT) -> list[Applied]:
    """Apply the parked outcomes that are due (beat's sweep, before it lists batches);
    stops at the first outage: the ledger is still away."""
    done: list[Applied] = []
    for batch_id in parked_ids(rt)[:limit]:
        applied = _apply_one(rt, batch_id, retry_for=0.0, due=True)
        if applied is None:
            continue
        done.append(applied)
        if not applied.recorded and not applied.busy and applied.error == "outage":
            break
    return done


def _apply_one(rt: Runtime, batch_id: int, *, retry_for: float, due: bool) -> Applied | None:
    with _locked(rt, batch_id) as got:
        if not got:
            return Applied(batch_id, 0, recorded=False, busy=True)
        outcome = get_parked(rt, batch_id)  # read again under the lock
        if outcome is None:
            return None
        if due and outcome.next_try_at is not None and outcome.next_try_at > rt.clock():
            return None
        try:
            enqueue = settle(rt, outcome, retry_for=retry_for)
        except Exception as err:  # noqa: BLE001 - kept parked (or failed after its attempts)
            outage = rt.ledger.is_outage(err)
            gave_up = _after_failure(rt, outcome, err)
            return Applied(
                batch_id,
                len(outcome.files),
                recorded=gave_up,
                gave_up=gave_up,
                error="outage" if outage else outcome.last_error,
            )
        _drop(rt, batch_id)
        log.info(
            "parked_outcome_recorded",
            batch_id=batch_id,
            files=len(outcome.files),
            request_id=outcome.request_id,
            parked_for=round(rt.clock() - (outcome.parked_at or rt.clock()), 3),
        )
        return Applied(batch_id, len(outcome.files), recorded=True, enqueue=tuple(enqueue))


# --- shared with the uploader --------------------------------------------------------


def _place(rt: Runtime, outcome: Outcome) -> list[tuple[int, str]]:
    """Move each recorded file: done/ (or as INGEST_AFTER_UPLOAD says), failed/ when its
    indexing failed at upload; returns where each went."""
    settings = rt.settings.ingest
    moves: list[tuple[int, str]] = []
    for f in outcome.files:
        if f.url:
            continue  # no bytes: a URL row's outcome is in the ledger only
        in_place = not in_work_area(settings, f.work_path)
        if f.state == FileState.FAILED:
            reason = Reason(f.reason) if f.reason else Reason.INDEXING_FAILED
            final = file_failed(
                settings,
                work_path=f.work_path,
                rel_path=f.path,
                file_id=f.file_id,
                reason=reason,
                message="indexing failed at upload",
                extra={"sha256": f.sha256},
                in_place=in_place,
            )
            if final is None:
                log.warning("failed_file_not_moved", file_id=f.file_id, reason=reason)
        else:
            final = file_done(
                settings,
                work_path=f.work_path,
                rel_path=f.path,
                file_id=f.file_id,
                in_place=in_place,
            )
        if final is not None:
            moves.append((f.file_id, final))
    return moves


def batch_requeued(rt: Runtime, requeued: list[ops.Requeued]) -> list[int]:
    """New batches for rows queued again (within the batch limits); their ids, to enqueue.

    Nothing else batches queued rows while the watcher runs (its start adopts
    any left unbatched, should this process die first); the beat sweep resends
    a batch whose message is lost.
    """
    settings = rt.settings.ingest
    groups = pack(
        ((r.file_id, r.size) for r in requeued),
        max_files=settings.batch_max_files,
        max_bytes=settings.batch_max_bytes,
    )
    return create_batches(rt.ledger, groups, now=rt.clock()) if groups else []

"""What the upload task writes: claiming a batch under a lease, the outcome of
each file (with the hash of the bytes it really sent), releasing a batch to try
again, and splitting one after a 413.

Every function here is one short write transaction and safe to call twice:
a claim checks the batch's state and lease in the same statement that takes it,
and a batch that used its attempts is failed by its next claim, never sent again.

A claim is numbered (`Hold`), and what a run writes while it holds the batch
(marking its files `uploading`, releasing, splitting, failing, finishing it)
names that number, checked in the same transaction: a run whose lease ran out
(waiting for a request slot, say) and whose batch another run has claimed since
gets `LeaseLost` and writes nothing, so two runs never send one batch unknowingly,
nor does a late run undo what the other recorded. Recording an answer the server
accepted (`record_uploaded`) names no claim: those images are stored whoever sent them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, Row, Table, and_, select, update
from sqlalchemy.orm import Session

from reka_ingest.core import holder
from reka_ingest.core.errors import LeaseLost
from reka_ingest.core.states import (
    BATCH_TERMINAL,
    NOT_ORIGINALS,
    BatchState,
    FileState,
    Origin,
    Reason,
)
from reka_ingest.core.text import clean_text
from reka_ingest.ledger.bulk import in_id_order, update_by_id
from reka_ingest.ledger.db import Ledger
from reka_ingest.ledger.intake import lock_content
from reka_ingest.ledger.schema import MAX_MESSAGE_CHARS, Batch, File

_FILES = cast(Table, File.__table__)
_BATCHES = cast(Table, Batch.__table__)

# What `record_uploaded` writes per row, besides the id (the request id and the time
# are the same for every row of a batch).
_RECORDED = (
    "state",
    "reason",
    "image_id",
    "image_url",
    "indexing_status",
    "upload_timestamp",
    "conversion",
    "indexed_at",
    "finished_at",
    "next_poll_at",
    "poll_delay",
)


_BATCH_FILE_COLUMNS = (
    File.id,
    File.path,
    File.work_path,
    File.size,
    File.sha256,
    File.sidecar,
    File.index_flag,
    File.possible_duplicate,
    File.origin,
)


@dataclass(frozen=True, slots=True)
class BatchFile:
    id: int
    path: str
    work_path: str
    size: int
    sha256: str | None
    sidecar: dict[str, object] | None
    index_flag: bool
    possible_duplicate: bool
    origin: str = ""  # an Origin; `url`: a line of an image URL list, no bytes here

    @property
    def is_url(self) -> bool:
        return self.origin == Origin.URL


@dataclass(frozen=True, slots=True)
class Hold:
    """One claim of a batch: what a run's writes name (see the module's docstring)."""

    batch_id: int
    claim: int  # `batches.claim_seq` as this claim set it


@dataclass(frozen=True, slots=True)
class ClaimedBatch:
    batch_id: int
    attempt: int
    files: list[BatchFile]
    # The previous holder's lease ran out while its request may have been sent.
    outcome_unknown: bool
    # Files failed by this claim instead of sent again: the batch had used its
    # attempts (`max_attempts`) and its lease ran out once more with the outcome
    # unknown. They are `failed` in the ledger already; their bytes still need
    # moving to failed/ (with `message`, the reason file's text).
    given_up: tuple[BatchFile, ...] = ()
    message: str | None = None
    claim: int = 0  # `batches.claim_seq` as this claim set it

    @property
    def hold(self) -> Hold:
        return Hold(self.batch_id, self.claim)


@dataclass(frozen=True, slots=True)
class Rehashed:
    """A file whose upload carried other bytes than the ones hashed at its claim
    (rewritten through a handle held open across the claim, say)."""

    file_id: int
    claimed_sha256: str | None
    sha256: str  # of the bytes sent
    size: int  # of the bytes sent


@dataclass(frozen=True, slots=True)
class Requeued:
    """A row queued again, with no batch: it needs one."""

    file_id: int
    size: int


@dataclass(frozen=True, slots=True)
class Uploaded:
    """One result of an upload, in the file's terms."""

    file_id: int
    image_id: str
    image_url: str
    indexing_status: int
    upload_timestamp: float
    state: FileState
    reason: Reason | None = None
    next_poll_at: float | None = None
    poll_delay: float | None = None
    conversion: str | None = None  # how the bytes sent were made (HEIF -> JPEG), or None


def claim_batch(
    ledger: Ledger,
    batch_id: int,
    *,
    now: float,
    lease: float,
    max_attempts: int | None = None,
) -> ClaimedBatch | None:
    """Take a batch for upload, or None when it is finished or another worker holds it.

    A batch whose lease ran out (its worker died, or its outcome could not be
    recorded), or whose holder was a process of this machine that no longer runs
    (`reka_ingest.core.holder`: taken at once, not a lease later), is taken again
    with its files flagged `possible_duplicate`, at most
    until it has used `max_attempts` (None: no bound): then this claim fails its
    files (`upload_failed`, the flag kept, the message naming the attempts) and
    finishes the batch instead of handing it out to be sent once more.
    """
    with ledger.write() as s:
        batch = s.execute(
            select(Batch).where(Batch.id == batch_id).with_for_update()
        ).scalar_one_or_none()
        if batch is None or batch.state in BATCH_TERMINAL:
            return None
        if (
            batch.state == BatchState.UPLOADING
            and (batch.lease_until or 0.0) > now
            and not holder.gone(batch.claimed_by)  # a dead holder of this machine: take it
        ):
            return None
        if batch.state == BatchState.DEFERRED and (batch.next_attempt_at or 0.0) > now:
            return None
        outcome_unknown = batch.state == BatchState.UPLOADING
        batch.claim_seq += 1  # from here, the previous holder's writes are refused
        batch.claimed_by = holder.this_process()
        if outcome_unknown:
            s.execute(
                update(File)
                .where(File.batch_id == batch_id, File.state == FileState.UPLOADING)
                .values(possible_duplicate=True, updated_at=now)
            )
            if max_attempts is not None and batch.attempts >= max_attempts:
                return _give_up(s, batch, now)
        batch.state = BatchState.UPLOADING
        batch.attempts += 1
        batch.lease_until = now + lease
        batch.started_at = now
        batch.next_attempt_at = None
        files = _unfinished_files(s, batch_id)
        if not files:
            batch.state = BatchState.DONE
            batch.finished_at = now
            batch.lease_until = None
        return ClaimedBatch(batch.id, batch.attempts, files, outcome_unknown, claim=batch.claim_seq)


def _unfinished_files(s: Session, batch_id: int) -> list[BatchFile]:
    """A batch's files still to send (queued, or uploading when a claim came back),
    read as the columns a BatchFile needs, not whole ORM objects."""
    rows = s.execute(
        select(*_BATCH_FILE_COLUMNS)
        .where(
            File.batch_id == batch_id,
            File.state.in_([FileState.QUEUED, FileState.UPLOADING]),
        )
        .order_by(File.id)
    ).all()
    return [
        BatchFile(
            id=r.id,
            path=r.path,
            work_path=r.work_path,
            size=r.size,
            sha256=r.sha256,
            sidecar=r.sidecar,
            index_flag=r.index_flag,
            possible_duplicate=r.possible_duplicate,
            origin=r.origin,
        )
        for r in rows
    ]


def _give_up(s: Session, batch: Batch, now: float) -> ClaimedBatch:
    """Fail a batch's unfinished files instead of a claim past its last attempt."""
    message = (
        f"gave up after {batch.attempts} attempts: the batch's lease ran out each time"
        " before its outcome was recorded (a worker died, or the ledger could not take"
        " the answer); the server may hold a copy of this file (possible_duplicate)"
    )
    files = tuple(_unfinished_files(s, batch.id))
    _fail_rows(s, [f.id for f in files], Reason.UPLOAD_FAILED, message, now)
    batch.state = BatchState.DONE
    batch.finished_at = now
    batch.lease_until = None
    batch.last_error = message
    return ClaimedBatch(
        batch.id, batch.attempts, [], True, given_up=files, message=message, claim=batch.claim_seq
    )


def count_attempt(ledger: Ledger, batch_id: int, *, now: float, error: str) -> int:
    """One more attempt spent on a batch without a new request (its accepted outcome
    was refused by the ledger); returns the batch's attempts now."""
    with ledger.write() as s:
        s.execute(
            update(Batch)
            .where(Batch.id == batch_id)
            .values(attempts=Batch.attempts + 1, last_error=clean_text(error, MAX_MESSAGE_CHARS))
        )
        attempts = s.scalar(select(Batch.attempts).where(Batch.id == batch_id))
    return int(attempts or 0)


def check_hold(s: Session, hold: Hold | None, *, lease_until: float | None = None) -> None:
    """Raise `LeaseLost` (the transaction then rolls back) unless `hold`'s claim still
    holds its batch; `lease_until`: the lease renewed to then in the same statement.
    None: a write no run's claim is behind (a recorded answer, a tool)."""
    if hold is None:
        return
    where = (
        _BATCHES.c.id == hold.batch_id,
        _BATCHES.c.state == BatchState.UPLOADING,
        _BATCHES.c.claim_seq == hold.claim,
    )
    values: dict[str, Any] = (
        {"lease_until": lease_until}
        if lease_until is not None
        else {"claim_seq": _BATCHES.c.claim_seq}  # a write that changes nothing: locks the row
    )
    result = cast(CursorResult[Any], s.execute(update(_BATCHES).where(*where).values(**values)))
    if result.rowcount != 1:
        raise LeaseLost(hold.batch_id, hold.claim)


def mark_uploading(
    ledger: Ledger,
    file_ids: Sequence[int],
    *,
    now: float,
    hold: Hold | None,
    lease_until: float | None = None,
) -> None:
    """Just before the request: from here on, its outcome may be unknown. The claim
    must still hold the batch (`LeaseLost`), and its lease is renewed to
    `lease_until`: it covers the request, not the wait for a slot before it."""
    with ledger.write() as s:  # Core statements: no ORM session to synchronise
        check_hold(s, hold, lease_until=lease_until)
        s.execute(
            update(_FILES)
            .where(_FILES.c.id.in_(list(file_ids)))
            .values(state=FileState.UPLOADING, attempts=_FILES.c.attempts + 1, updated_at=now)
        )


def flag_possible_duplicates(ledger: Ledger, file_ids: Sequence[int], *, now: float) -> None:
    """A request for these files may have been stored though no answer came back."""
    ids = list(file_ids)
    if not ids:
        return
    with ledger.write() as s:
        s.execute(
            update(File).where(File.id.in_(ids)).values(possible_duplicate=True, updated_at=now)
        )


def record_uploaded(
    ledger: Ledger,
    results: Sequence[Uploaded],
    *,
    request_id: str | None,
    now: float,
    rehashed: Sequence[Rehashed] = (),
) -> list[Requeued]:
    """Write each file's upload result, and hand its image id to its duplicates.

    One set-based UPDATE for the batch's rows (`reka_ingest.ledger.bulk`), and one look for their
    duplicates (`duplicate_of` has no index: a statement per file scanned the
    whole table once per file, which grew with the ledger).

    In the same write, each `rehashed` file gets the hash and size of the bytes
    it sent, and the rows recorded as copies of it by the old hash are given
    back to what those bytes really are (`_reassign_copies`); returns the rows
    that must be uploaded after all (queued, with no batch yet).
    """
    if not results:
        return []
    final = (FileState.INDEXED, FileState.STORED, FileState.FAILED)
    rows = [
        (
            r.file_id,
            r.state,
            r.reason,
            r.image_id,
            r.image_url,
            r.indexing_status,
            r.upload_timestamp,
            r.conversion,
            now if r.state == FileState.INDEXED else None,
            now if r.state in final else None,
            r.next_poll_at,
            r.poll_delay,
        )
        for r in results
    ]
    by_id = {r.file_id: r for r in results}
    requeued: list[Requeued] = []
    with ledger.write() as s:
        if rehashed:  # a file's bytes change identity: decide in turn with the intake
            lock_content(s, {h for c in rehashed for h in (c.claimed_sha256, c.sha256) if h})
        update_by_id(
            s,
            _RECORDED,
            rows,
            {"upload_request_id": request_id, "uploaded_at": now, "updated_at": now},
        )
        for change in rehashed:
            requeued.extend(_record_rehashed(s, change, now))
        originals = s.scalars(
            select(File.duplicate_of).where(File.duplicate_of.in_(list(by_id))).distinct()
        ).all()
        for original in originals:
            if original is None:
                continue
            r = by_id[original]
            s.execute(
                update(File)
                .where(in_id_order(File.duplicate_of == original))
                .values(image_id=r.image_id, image_url=r.image_url, updated_at=now)
            )
    return requeued


def _record_rehashed(s: Session, change: Rehashed, now: float) -> list[Requeued]:
    """The sent bytes' hash and size on the file's row, and its copies reassigned."""
    old = change.claimed_sha256
    s.execute(
        update(File)
        .where(File.id == change.file_id)
        .values(
            sha256=change.sha256,
            size=change.size,
            message=(
                "the file changed after it was claimed: sha256"
                f" {(old or 'none')[:12]} at the claim, {change.sha256[:12]} sent"
            ),
            updated_at=now,
        )
    )
    return _reassign_copies(s, change.file_id, old, now) if old else []


def _reassign_copies(s: Session, file_id: int, old: str, now: float) -> list[Requeued]:
    """Rows recorded as `duplicate`s of `file_id` for bytes it never sent (hash `old`).

    They are copies of each other, not of it. If another live row holds those
    bytes, they point at it (and share its image id once known); otherwise the
    first is queued again, to be uploaded as what it is, from where its bytes
    are now (its `final_path`: done/, or kept; a deleted copy then fails
    `file_missing` at its upload), and the others point at that one. Returns
    the row queued again, if any.
    """
    copies = s.execute(
        select(File.id, File.size, File.work_path, File.final_path)
        .where(
            File.sha256 == old,
            File.state == FileState.DUPLICATE,
            File.duplicate_of == file_id,
        )
        .order_by(File.id)
    ).all()
    if not copies:
        return []
    live = s.execute(
        select(File.id, File.image_id, File.image_url)
        .where(File.sha256 == old, File.state.notin_(NOT_ORIGINALS), File.id != file_id)
        .order_by(File.id)
        .limit(1)
    ).first()
    requeued: list[Requeued] = []
    if live is None:
        first, copies = copies[0], copies[1:]
        s.execute(
            update(File)
            .where(File.id == first.id)
            .values(
                state=FileState.QUEUED,
                reason=None,
                duplicate_of=None,
                image_id=None,
                image_url=None,
                batch_id=None,
                finished_at=None,
                work_path=first.final_path or first.work_path,
                final_path=None,
                queued_at=now,
                message=(
                    f"queued again: recorded as a copy of file {file_id},"
                    " which changed after its claim and sent other bytes"
                ),
                updated_at=now,
            )
        )
        requeued.append(Requeued(first.id, first.size))
        target: tuple[int, str | None, str | None] = (first.id, None, None)
    else:
        target = (live.id, live.image_id, live.image_url)
    if copies:
        s.execute(
            update(File)
            .where(File.id.in_([c.id for c in copies]))
            .values(
                duplicate_of=target[0],
                image_id=target[1],
                image_url=target[2],
                message=(
                    f"same bytes as file {target[0]}"
                    f" (file {file_id} changed after its claim and sent other bytes)"
                ),
                updated_at=now,
            )
        )
    return requeued


def fail_files(
    ledger: Ledger,
    file_ids: Sequence[int],
    reason: Reason,
    message: str,
    *,
    now: float,
    hold: Hold | None = None,
) -> None:
    """Give files their final `failed` outcome; their duplicates share it (same bytes).
    `hold`: the claim of the run failing them, which must still hold their batch."""
    ids = list(file_ids)
    if not ids:
        return
    with ledger.write() as s:
        check_hold(s, hold)
        _fail_rows(s, ids, reason, message, now)


def _fail_rows(s: Session, ids: list[int], reason: Reason, message: str, now: float) -> None:
    if not ids:
        return
    message = clean_text(message, MAX_MESSAGE_CHARS)  # an error's text is foreign text
    s.execute(
        update(File)
        .where(in_id_order(File.id.in_(ids)))
        .values(
            state=FileState.FAILED,
            reason=reason,
            message=message,
            finished_at=now,
            next_poll_at=None,
            updated_at=now,
        )
    )
    s.execute(
        update(File)
        .where(in_id_order(and_(File.duplicate_of.in_(ids), File.state == FileState.DUPLICATE)))
        .values(
            state=FileState.FAILED,
            reason=reason,
            message=f"same bytes as a file that failed: {message}",
            updated_at=now,
        )
    )


def release_batch(
    ledger: Ledger,
    batch_id: int,
    *,
    now: float,
    error: str,
    next_attempt_at: float | None = None,
    refund_attempt: bool = False,
    hold: Hold | None,
) -> None:
    """Give a batch back after a passing failure: its files wait again, nothing is lost.

    `refund_attempt`: the claim's attempt is given back, because no request was
    answered for it by a fault (the shared budget said wait, or the API said 429);
    waiting for the quota never brings a batch closer to `upload_max_retries`.
    """
    attempts = Batch.attempts - 1 if refund_attempt else Batch.attempts
    with ledger.write() as s:
        check_hold(s, hold)
        s.execute(
            update(File)
            .where(File.batch_id == batch_id, File.state == FileState.UPLOADING)
            .values(state=FileState.QUEUED, updated_at=now)
        )
        s.execute(
            update(Batch)
            .where(Batch.id == batch_id)
            .values(
                state=BatchState.DEFERRED if next_attempt_at else BatchState.QUEUED,
                next_attempt_at=next_attempt_at,
                lease_until=None,
                last_error=error[:2000],
                attempts=attempts,
            )
        )


def finish_batch(
    ledger: Ledger,
    batch_id: int,
    *,
    now: float,
    request_id: str | None,
    final_paths: Sequence[tuple[int, str]] = (),
    hold: Hold | None = None,
) -> None:
    """The batch is done; `final_paths` (file id, where its bytes went) in the same write.
    `hold`: the claim of the run finishing it without an accepted answer, which must
    still hold it (an accepted answer's recording finishes it whoever holds it)."""
    with ledger.write() as s:
        check_hold(s, hold)
        _write_final_paths(s, final_paths, now)
        s.execute(
            update(_BATCHES)
            .where(_BATCHES.c.id == batch_id)
            .values(state=BatchState.DONE, finished_at=now, lease_until=None, request_id=request_id)
        )


def split_batch(
    ledger: Ledger, batch_id: int, *, now: float, error: str, hold: Hold | None
) -> list[int]:
    """Replace a batch by two halves (after a 413); returns the new batch ids."""
    with ledger.write() as s:
        check_hold(s, hold)
        rows = _unsent_rows(s, batch_id)
        half = (len(rows) + 1) // 2
        return _replace_batch(s, batch_id, [rows[:half], rows[half:]], now=now, error=error)


def split_by_kind(ledger: Ledger, batch_id: int, *, now: float, hold: Hold | None) -> list[int]:
    """Replace a batch holding both file rows and URL rows by one batch of each (a
    request is one kind; `retry` or an older version may have mixed them); returns
    the new batch ids."""
    with ledger.write() as s:
        check_hold(s, hold)
        rows = _unsent_rows(s, batch_id)
        parts = [[r for r in rows if (r.origin == Origin.URL) == urls] for urls in (False, True)]
        return _replace_batch(
            s,
            batch_id,
            parts,
            now=now,
            error="split by kind: file rows and URL rows are sent apart",
        )


def _unsent_rows(s: Session, batch_id: int) -> Sequence[Row[int, int, str]]:
    """The batch's files not yet answered for, in id order: id, size, origin."""
    return s.execute(
        select(File.id, File.size, File.origin)
        .where(
            File.batch_id == batch_id,
            File.state.in_([FileState.QUEUED, FileState.UPLOADING]),
        )
        .order_by(File.id)
    ).all()


def _replace_batch(
    s: Session,
    batch_id: int,
    parts: Sequence[Sequence[Row[int, int, str]]],
    *,
    now: float,
    error: str,
) -> list[int]:
    """A new queued batch for each non-empty part (its files queued in it again), and
    the old batch `split`; the new batch ids."""
    new_ids: list[int] = []
    for part in parts:
        if not part:
            continue
        child = Batch(
            state=BatchState.QUEUED,
            parent_id=batch_id,
            created_at=now,
            queued_at=now,
            attempts=0,
            file_count=len(part),
            total_bytes=sum(r.size for r in part),
        )
        s.add(child)
        s.flush()
        s.execute(
            update(File)
            .where(File.id.in_([r.id for r in part]))
            .values(batch_id=child.id, state=FileState.QUEUED, updated_at=now)
        )
        new_ids.append(child.id)
    s.execute(
        update(Batch)
        .where(Batch.id == batch_id)
        .values(state=BatchState.SPLIT, finished_at=now, lease_until=None, last_error=error)
    )
    return new_ids


def set_final_path(ledger: Ledger, moves: Sequence[tuple[int, str]], *, now: float) -> None:
    """Record where each file's bytes went after its outcome (done/, failed/)."""
    if not moves:
        return
    with ledger.write() as s:
        _write_final_paths(s, moves, now)


def _write_final_paths(s: Session, moves: Sequence[tuple[int, str]], now: float) -> None:
    if moves:
        update_by_id(s, ("final_path",), list(moves), {"updated_at": now})

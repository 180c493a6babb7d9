"""What the indexing poller writes: taking the rows whose poll time has come
(pushing that time out as a lease, so two sweeps never poll one row at once),
recording what Get Image said, and finding the files whose indexing failed but
whose bytes have not gone to failed/ yet (and recording where they went)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, exists, func, not_, or_, select, update

from reka_ingest.core.states import BATCH_TERMINAL, BatchState, FileState, Origin, Reason
from reka_ingest.ledger.bulk import update_by_id
from reka_ingest.ledger.db import Ledger
from reka_ingest.ledger.schema import Batch, File

# The reasons an indexing outcome gives (at upload or by a poll): the file was sent,
# so its bytes went where uploaded files go until the failure was known.
INDEXING_REASONS = (Reason.INDEXING_FAILED, Reason.INDEXING_TIMEOUT)


@dataclass(frozen=True, slots=True)
class DuePoll:
    file_id: int
    image_id: str
    index_flag: bool
    uploaded_at: float
    poll_delay: float


@dataclass(frozen=True, slots=True)
class PollOutcome:
    file_id: int
    state: FileState
    indexing_status: int | None
    image_url: str | None
    request_id: str | None
    reason: Reason | None = None
    message: str | None = None
    next_poll_at: float | None = None
    poll_delay: float | None = None


def claim_due_polls(ledger: Ledger, *, now: float, limit: int, lease: float) -> list[DuePoll]:
    with ledger.write() as s:
        rows = s.execute(
            select(File.id, File.image_id, File.index_flag, File.uploaded_at, File.poll_delay)
            .where(File.state == FileState.INDEXING, File.next_poll_at <= now)
            .order_by(File.next_poll_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        if not rows:
            return []
        s.execute(
            update(File).where(File.id.in_([r.id for r in rows])).values(next_poll_at=now + lease)
        )
        return [
            DuePoll(
                file_id=r.id,
                image_id=r.image_id or "",
                index_flag=r.index_flag,
                uploaded_at=r.uploaded_at or now,
                poll_delay=r.poll_delay or 0.0,
            )
            for r in rows
        ]


_FILES = File.metadata.tables[File.__tablename__]


def record_polls(ledger: Ledger, outcomes: list[PollOutcome], *, now: float) -> None:
    """Write each poll's outcome; a row no longer `indexing` is left alone.

    Outcomes are grouped by the columns they set, each group written many rows a
    statement (`reka_ingest.ledger.bulk`), each written row's `polls` counted.
    """
    groups: dict[tuple[str, ...], list[tuple[object, ...]]] = {}
    for o in outcomes:
        final = o.state != FileState.INDEXING
        values: dict[str, object] = {
            "state": o.state,
            "poll_request_id": o.request_id,
            "next_poll_at": o.next_poll_at,
            "poll_delay": o.poll_delay,
        }
        if o.indexing_status is not None:
            values["indexing_status"] = o.indexing_status
        if o.image_url:
            values["image_url"] = o.image_url
        if o.reason is not None:
            values["reason"] = o.reason
            values["message"] = o.message
        if o.state == FileState.INDEXED:
            values["indexed_at"] = now
        if final:
            values["finished_at"] = now
        columns = tuple(sorted(values))
        groups.setdefault(columns, []).append((o.file_id, *(values[c] for c in columns)))
    with ledger.write() as s:
        for columns, rows in groups.items():
            update_by_id(
                s,
                columns,
                rows,
                {"updated_at": now},
                only_in=FileState.INDEXING,
                counted="polls",
            )


@dataclass(frozen=True, slots=True)
class UnsettledFailure:
    """A file whose indexing failed and whose bytes are not in failed/ yet."""

    file_id: int
    path: str  # as the user dropped it
    work_path: str  # where it was claimed (or where it lives, for an in-place row)
    final_path: str | None  # where the upload put it (done/, the work area) or None (deleted)
    reason: str
    message: str | None
    sha256: str | None
    image_id: str | None


# A row's batch is still being finished: looked up among the few unfinished batches
# (by the state index), not joined to every batch, which a sweep would read whole.
_UNFINISHED = sorted(set(BatchState) - BATCH_TERMINAL)
_in_unfinished_batch = exists().where(Batch.id == File.batch_id, Batch.state.in_(_UNFINISHED))


def take_unsettled_failures(
    ledger: Ledger, *, settled_suffix: str, now: float, lease: float, limit: int
) -> list[UnsettledFailure]:
    """Failed rows whose reason file is still to write: failed by indexing with no
    `final_path`, or any whose `final_path` is their bytes, not a reason file
    (`settled_suffix`). Least recently touched first, each taken under a lease
    (`next_poll_at`, unused once a row is final), so two sweeps never move one file
    at once.

    A row whose batch is still being finished is left to the uploader, which
    records the batch's final paths when it ends. Image names never end in
    `.json` (those are sidecars), so the suffix tells a reason file from bytes.
    """
    with ledger.write() as s:
        rows = s.execute(
            select(
                File.id,
                File.path,
                File.work_path,
                File.final_path,
                File.reason,
                File.message,
                File.sha256,
                File.image_id,
            )
            .where(
                File.state == FileState.FAILED,
                File.origin != Origin.URL,  # a URL row: no bytes, its reason in the ledger only
                or_(
                    and_(File.final_path.is_(None), File.reason.in_(INDEXING_REASONS)),
                    # bytes placed (in done/ before indexing failed, or in failed/
                    # when the reason file could not be written: a full disk)
                    not_(File.final_path.endswith(settled_suffix, autoescape=True)),
                ),
                ~_in_unfinished_batch,
                or_(File.next_poll_at.is_(None), File.next_poll_at <= now),
            )
            .order_by(File.updated_at, File.id)
            .limit(limit)
            .with_for_update(of=File, skip_locked=True)
        ).all()
        if rows:
            s.execute(
                update(File)
                .where(File.id.in_([r.id for r in rows]))
                .values(next_poll_at=now + lease)
            )
    return [
        UnsettledFailure(
            file_id=r.id,
            path=r.path,
            work_path=r.work_path,
            final_path=r.final_path,
            reason=r.reason,
            message=r.message,
            sha256=r.sha256,
            image_id=r.image_id,
        )
        for r in rows
    ]


def record_settled(
    ledger: Ledger,
    settled: list[tuple[int, str]],
    unsettled: list[int],
    *,
    now: float,
) -> None:
    """Record each settled file's reason file as its `final_path`; touch the ones that
    could not be moved, so the next sweep takes others before trying them again.
    Either way the lease is given back.

    Only rows still `failed` are written: a retry that took a file meanwhile wins.
    """
    if not settled and not unsettled:
        return
    with ledger.write() as s:
        if settled:
            update_by_id(
                s,
                ("final_path",),
                list(settled),
                {"next_poll_at": None, "updated_at": now},
                only_in=FileState.FAILED,
            )
        if unsettled:
            s.connection().execute(
                update(_FILES)
                .where(_FILES.c.id.in_(unsettled), _FILES.c.state == FileState.FAILED)
                .values(next_poll_at=None, updated_at=now)
            )


def images_bound(ledger: Ledger) -> int:
    """An upper bound on the images this ledger's rows were uploaded as (one per row,
    give or take a duplicate): the highest file id, read from the primary key's index."""
    with ledger.read() as s:
        return int(s.execute(select(func.max(File.id))).scalar() or 0)

"""What the indexing poller writes: taking the rows whose poll time has come
(pushing that time out as a lease, so two sweeps never poll one row at once)
and recording what Get Image said."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import bindparam, select, update

from worker.ledger.db import Ledger
from worker.ledger.schema import File
from worker.states import FileState, Reason


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

    Outcomes are grouped by the columns they set, one executemany per group (a
    statement built per row cost ~2.6 ms, more than the Get Image call itself).
    """
    groups: dict[tuple[str, ...], list[dict[str, object]]] = {}
    for o in outcomes:
        final = o.state != FileState.INDEXING
        values: dict[str, object] = {
            "state": o.state,
            "poll_request_id": o.request_id,
            "next_poll_at": o.next_poll_at,
            "poll_delay": o.poll_delay,
            "updated_at": now,
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
        row = {f"v_{name}": value for name, value in values.items()}
        row["b_id"] = o.file_id
        groups.setdefault(tuple(sorted(values)), []).append(row)
    with ledger.write() as s:
        conn = s.connection()
        for columns, rows in groups.items():
            stmt = (
                update(_FILES)
                .where(_FILES.c.id == bindparam("b_id"), _FILES.c.state == FileState.INDEXING)
                .values(polls=_FILES.c.polls + 1, **{c: bindparam(f"v_{c}") for c in columns})
            )
            conn.execute(stmt, rows)

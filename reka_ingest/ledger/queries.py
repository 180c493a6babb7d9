"""Read-only views of the ledger for `status`, `files` and metrics."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from reka_ingest.core.states import ACTIVE, FileState
from reka_ingest.ledger.db import Ledger
from reka_ingest.ledger.schema import File


@dataclass(frozen=True, slots=True)
class Summary:
    files: dict[str, int]  # every state name -> count (zeros included)
    total: int
    oldest_waiting_path: str | None
    oldest_waiting_seen_at: float | None
    finished_last_minute: int
    first_seen_at: float | None
    last_finished_at: float | None


def summary(ledger: Ledger, *, now: float) -> Summary:
    with ledger.read() as s:
        counts = dict(s.execute(select(File.state, func.count()).group_by(File.state)).all())
        oldest = s.execute(
            select(File.path, File.seen_at)
            .where(File.state.in_(list(ACTIVE)))
            .order_by(File.seen_at)
            .limit(1)
        ).first()
        recent = s.scalar(
            select(func.count()).where(File.finished_at.is_not(None), File.finished_at >= now - 60)
        )
        first_seen, last_finished = s.execute(
            select(func.min(File.seen_at), func.max(File.finished_at))
        ).one()
    files = {state.value: int(counts.get(state.value, 0)) for state in FileState}
    return Summary(
        files=files,
        total=sum(files.values()),
        oldest_waiting_path=oldest.path if oldest else None,
        oldest_waiting_seen_at=oldest.seen_at if oldest else None,
        finished_last_minute=int(recent or 0),
        first_seen_at=first_seen,
        last_finished_at=last_finished,
    )


def list_files(
    ledger: Ledger, *, state: FileState | None = None, limit: int | None = None
) -> list[File]:
    with ledger.read() as s:
        q = select(File).order_by(File.id)
        if state is not None:
            q = q.where(File.state == state)
        if limit is not None:
            q = q.limit(limit)
        return list(s.scalars(q))

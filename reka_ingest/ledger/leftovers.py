"""Rows whose outcome is on record but whose bytes were never moved.

A process that dies between recording a file's outcome and moving its bytes
(to done/ or failed/) leaves a row with an outcome, no `final_path`, and the
file still in the work area. The watcher finishes those moves at start. A URL
row (a line of an image URL list) has no bytes: it is never one of these.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from reka_ingest.core.states import TERMINAL, UPLOADED, FileState, Origin
from reka_ingest.ledger.db import Ledger
from reka_ingest.ledger.schema import File


@dataclass(frozen=True, slots=True)
class Unmoved:
    id: int
    path: str
    work_path: str
    state: FileState
    reason: str | None
    message: str | None
    sha256: str | None
    origin: str
    from_intake: bool  # recorded final by the watcher, never in a batch
    updated_at: float


_SETTLED = sorted(TERMINAL | UPLOADED)


def unmoved_files(ledger: Ledger, *, work_prefix: str, limit: int = 10_000) -> list[Unmoved]:
    """Settled rows (final, or uploaded) with no `final_path` whose work path is under
    `work_prefix` (a claim-folder prefix: one inbox's own claims)."""
    like = work_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    with ledger.read() as s:
        rows = s.execute(
            select(
                File.id,
                File.path,
                File.work_path,
                File.state,
                File.reason,
                File.message,
                File.sha256,
                File.origin,
                File.batch_id,
                File.updated_at,
            )
            .where(
                File.final_path.is_(None),
                File.state.in_(_SETTLED),
                File.work_path.like(like, escape="\\"),
                File.origin != Origin.URL,  # a URL row has no bytes to move
            )
            .order_by(File.id)
            .limit(limit)
        ).all()
    return [
        Unmoved(
            id=r.id,
            path=r.path,
            work_path=r.work_path,
            state=FileState(r.state),
            reason=r.reason,
            message=r.message,
            sha256=r.sha256,
            origin=r.origin,
            from_intake=r.batch_id is None,
            updated_at=r.updated_at,
        )
        for r in rows
    ]

"""Rows whose outcome is on record but whose bytes were never moved.

A process that dies between recording a file's outcome and moving its bytes
(to done/ or failed/) leaves a row with an outcome, no `final_path`, and the
file still in the work area. The watcher finishes those moves at start, for the
files it finds in its claim folders: rows whose bytes are gone (every uploaded
row under INGEST_AFTER_UPLOAD=delete) are never read again, however many. A URL
row (a line of an image URL list) has no bytes: it is never one of these.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, select

from reka_ingest.core.states import TERMINAL, UPLOADED, FileState, Origin
from reka_ingest.ledger.columns import keyable
from reka_ingest.ledger.db import IN_CHUNK, Ledger
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


def unmoved_files(ledger: Ledger, work_paths: Sequence[str]) -> list[Unmoved]:
    """Settled rows (final, or uploaded) with no `final_path` among these work paths
    (files found in the work area: the caller lists them on disk, so the look is
    as long as what is there, not as the ledger's history)."""
    stored = sorted({keyable(p) for p in work_paths})
    rows: list[Row[Any]] = []
    with ledger.read() as s:
        for i in range(0, len(stored), IN_CHUNK):
            rows.extend(
                s.execute(
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
                    ).where(
                        File.work_path.in_(stored[i : i + IN_CHUNK]),
                        File.final_path.is_(None),
                        File.state.in_(_SETTLED),
                        File.origin != Origin.URL,  # a URL row has no bytes to move
                    )
                )
            )
    rows.sort(key=lambda r: r.id)
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

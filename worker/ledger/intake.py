"""What the watcher writes: new file rows and the batches that group them.

Content hash is identity: a file whose bytes match an earlier live row is
recorded as a `duplicate` of it at once (unless re-uploads are allowed), and
gets that row's `image_id` as soon as it is known.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import select, update

from worker.ledger.db import Ledger
from worker.ledger.schema import Batch, File
from worker.states import BatchState, FileState, Reason


@dataclass(frozen=True, slots=True)
class NewFile:
    """A whole, claimed, hashed file, ready to be recorded."""

    path: str  # as the user dropped it, relative to source_root
    source_root: str
    work_path: str  # where its bytes are now
    origin: str  # event | scan | backfill | recovery
    size: int
    mtime: float
    sha256: str | None
    seen_at: float
    sidecar: dict[str, object] | None = None
    index_flag: bool = True
    # Set when the file is already known to be bad (bad sidecar, empty, ...).
    reason: Reason | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class Recorded:
    """What became of one NewFile: queued (for batching) or already final."""

    file_id: int
    state: FileState
    size: int
    work_path: str  # which NewFile this is (skipped files leave gaps)
    duplicate_of: int | None = None
    extra: dict[str, object] = field(default_factory=dict)


def record_files(
    ledger: Ledger, files: Sequence[NewFile], *, now: float, allow_reupload: bool = False
) -> list[Recorded]:
    """Insert one row per file in one transaction; a work path already recorded is skipped."""
    out: list[Recorded] = []
    if not files:
        return out
    with ledger.write() as s:
        known = set(
            s.scalars(
                select(File.work_path).where(File.work_path.in_([f.work_path for f in files]))
            )
        )
        for f in files:
            if f.work_path in known:
                continue
            known.add(f.work_path)
            row = File(
                path=f.path,
                source_root=f.source_root,
                work_path=f.work_path,
                origin=f.origin,
                size=f.size,
                mtime=f.mtime,
                sha256=f.sha256,
                sidecar=f.sidecar,
                index_flag=f.index_flag,
                seen_at=f.seen_at,
                updated_at=now,
                attempts=0,
                polls=0,
                possible_duplicate=False,
                state=FileState.QUEUED,
            )
            if f.reason is not None:
                row.state = FileState.FAILED
                row.reason = f.reason
                row.message = f.message
                row.finished_at = now
            elif f.sha256 and not allow_reupload:
                original = s.execute(
                    select(File.id, File.image_id, File.image_url)
                    .where(
                        File.sha256 == f.sha256,
                        File.state.notin_([FileState.FAILED, FileState.DUPLICATE]),
                    )
                    .order_by(File.id)
                    .limit(1)
                ).first()
                if original is not None:
                    row.state = FileState.DUPLICATE
                    row.reason = Reason.DUPLICATE_CONTENT
                    row.duplicate_of = original.id
                    row.image_id = original.image_id
                    row.image_url = original.image_url
                    row.message = f"same bytes as file {original.id}"
                    row.finished_at = now
            s.add(row)
            s.flush()
            out.append(
                Recorded(
                    file_id=row.id,
                    state=FileState(row.state),
                    size=row.size,
                    work_path=row.work_path,
                    duplicate_of=row.duplicate_of,
                )
            )
    return out


def create_batch(ledger: Ledger, file_ids: Sequence[int], *, now: float) -> int:
    """Group queued, unbatched files into a new batch in state `queued`; returns its id."""
    with ledger.write() as s:
        batch = Batch(state=BatchState.QUEUED, created_at=now, queued_at=now, attempts=0)
        s.add(batch)
        s.flush()
        s.execute(
            update(File)
            .where(
                File.id.in_(list(file_ids)),
                File.state == FileState.QUEUED,
                File.batch_id.is_(None),
            )
            .values(batch_id=batch.id, queued_at=now, updated_at=now)
        )
        rows = s.execute(select(File.size).where(File.batch_id == batch.id)).scalars().all()
        batch.file_count = len(rows)
        batch.total_bytes = sum(rows)
        return batch.id


def unbatched_files(ledger: Ledger, *, limit: int = 10_000) -> list[tuple[int, int]]:
    """Queued rows that never made it into a batch (the watcher stopped in between)."""
    with ledger.read() as s:
        rows = s.execute(
            select(File.id, File.size)
            .where(File.state == FileState.QUEUED, File.batch_id.is_(None))
            .order_by(File.id)
            .limit(limit)
        ).all()
        return [(r.id, r.size) for r in rows]


def known_work_paths(ledger: Ledger, paths: Sequence[str]) -> set[str]:
    """Which of these work-area paths already have a row (for recovery after a crash)."""
    found: set[str] = set()
    with ledger.read() as s:
        for start in range(0, len(paths), 500):
            chunk = list(paths[start : start + 500])
            found.update(s.scalars(select(File.work_path).where(File.work_path.in_(chunk))))
    return found

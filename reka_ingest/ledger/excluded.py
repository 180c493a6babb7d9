"""The `excluded` rows of one tree: read back at a start, forgotten when the rules change.

INGEST_INCLUDE / INGEST_EXCLUDE are read at start, so a watcher (or a scan) is the
one to notice that a file it finds excluded in the ledger is taken now: it
deletes that row, and the file is then taken like any new one (a watcher claims
it from the inbox, a scan records it in place at the same work path). An
`excluded` row is never an original, never in a batch and holds no image, so
deleting it leaves nothing pointing at it; the row of what the file becomes is
the file's record from then on.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from sqlalchemy import delete, select

from reka_ingest.core.states import FileState
from reka_ingest.ledger.db import IN_CHUNK, Ledger
from reka_ingest.ledger.schema import File

CHUNK_ROWS = 5_000


@dataclass(frozen=True, slots=True)
class ExcludedRow:
    id: int
    path: str  # relative to its source root, shown form; a folder's ends with `/`
    work_path: str  # where it is (in place), in the ledger's form


def excluded_rows(
    ledger: Ledger, *, source_root: str, chunk_rows: int = CHUNK_ROWS
) -> Iterator[list[ExcludedRow]]:
    """The `excluded` rows found under `source_root`, in id order, a chunk at a time
    (each read in its own transaction; the state index finds them)."""
    last = 0
    while True:
        with ledger.read() as s:
            rows = s.execute(
                select(File.id, File.path, File.work_path, File.source_root)
                .where(File.state == FileState.EXCLUDED, File.id > last)
                .order_by(File.id)
                .limit(chunk_rows)
            ).all()
        if not rows:
            return
        last = rows[-1].id
        yield [ExcludedRow(r.id, r.path, r.work_path) for r in rows if r.source_root == source_root]


def forget_excluded(ledger: Ledger, ids: Sequence[int]) -> int:
    """Delete these rows if they are still `excluded`; how many were."""
    gone = 0
    with ledger.write() as s:
        for i in range(0, len(ids), IN_CHUNK):
            result = s.execute(
                delete(File).where(
                    File.id.in_(ids[i : i + IN_CHUNK]), File.state == FileState.EXCLUDED
                )
            )
            gone += result.rowcount  # type: ignore[attr-defined]  # CursorResult for a DELETE
    return gone

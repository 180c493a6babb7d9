"""What `reka-ingest check` and `reka-ingest delete` read and write in the ledger.

Reading is by chunks in id order (keyset: `id > last`), each chunk its own short
read transaction, so a check of a ledger of any size holds one chunk of rows at a
time and never blocks a writer for long. Every write is conditional on the state
the caller read (a row that moved on in the meantime is left alone) and leaves a
time (`updated_at`), a reason and a message on the row.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from sqlalchemy import or_, select, update

from reka_ingest.core.states import BatchState, FileState, Origin, Reason
from reka_ingest.core.text import clean_text
from reka_ingest.ledger.db import IN_CHUNK, Ledger
from reka_ingest.ledger.schema import MAX_MESSAGE_CHARS, Batch, File

# Rows read per chunk by default.
CHUNK_ROWS = 1000
# A note appended to a row's message is separated from what was there by this.
NOTE_SEPARATOR = " | "


@dataclass(frozen=True, slots=True)
class CheckRow:
    """One row as the check needs it: never the sidecar, the paths or the message."""

    id: int
    path: str
    image_id: str | None
    state: str
    indexing_status: int | None
    sha256: str | None
    possible_duplicate: bool
    seen_at: float
    uploaded_at: float | None
    finished_at: float | None
    batch_started_at: float | None
    batch_finished_at: float | None


def iter_check_rows(ledger: Ledger, *, chunk_rows: int = CHUNK_ROWS) -> Iterator[list[CheckRow]]:
    """Rows that hold an image id or are flagged `possible_duplicate`, in id order,
    `chunk_rows` at a time (each chunk read in its own transaction)."""
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be >= 1")
    last = 0
    while True:
        with ledger.read() as s:
            rows = s.execute(
                select(
                    File.id,
                    File.path,
                    File.image_id,
                    File.state,
                    File.indexing_status,
                    File.sha256,
                    File.origin,
                    File.conversion,
                    File.possible_duplicate,
                    File.seen_at,
                    File.uploaded_at,
                    File.finished_at,
                    Batch.started_at,
                    Batch.finished_at.label("batch_finished_at"),
                )
                .outerjoin(Batch, Batch.id == File.batch_id)
                .where(File.id > last)
                .where(or_(File.image_id.is_not(None), File.possible_duplicate.is_(True)))
                .order_by(File.id)
                .limit(chunk_rows)
            ).all()
        if not rows:
            return
        last = rows[-1].id
        yield [
            CheckRow(
                id=r.id,
                path=r.path,
                image_id=r.image_id,
                state=r.state,
                indexing_status=r.indexing_status,
                # No content of Reka's can be compared with a URL row's sha256 (its
                # URL's identity, not a hash of bytes) or a converted file's (Reka
                # holds the JPEG made from the bytes it names).
                sha256=None if r.origin == Origin.URL or r.conversion is not None else r.sha256,
                possible_duplicate=bool(r.possible_duplicate),
                seen_at=r.seen_at,
                uploaded_at=r.uploaded_at,
                finished_at=r.finished_at,
                batch_started_at=r.started_at,
                batch_finished_at=r.batch_finished_at,
            )
            for r in rows
        ]


@dataclass(frozen=True, slots=True)
class Gone:
    """A row whose image Reka no longer holds (or that was deleted on request)."""

    file_id: int
    expected_state: str  # the state the caller read; a row in another state is left alone
    message: str


def upload_spans(ledger: Ledger, *, finished_since: float) -> list[tuple[float, float | None]]:
    """(started, finished) of every batch whose upload the ledger may not show yet to a
    check that began at `finished_since`: those uploading now (finished None) and those
    finished since (their rows may have been read before their answer was written)."""
    with ledger.read() as s:
        rows = s.execute(
            select(Batch.state, Batch.started_at, Batch.finished_at).where(
                Batch.started_at.is_not(None),
                or_(Batch.state == BatchState.UPLOADING, Batch.finished_at >= finished_since),
            )
        ).all()
    # An uploading batch's `finished_at` is an earlier attempt's, if any: its end is open.
    return [
        (r.started_at, None if r.state == BatchState.UPLOADING else r.finished_at) for r in rows
    ]


def mark_gone(
    ledger: Ledger, rows: Sequence[Gone], *, state: FileState, reason: Reason, now: float
) -> list[int]:
    """Set each row to `state` (expired or deleted) with `reason` and its message, at
    `now` (`updated_at`); the image id stays on the row, for the record. Returns the
    ids changed (a row no longer in its expected state is skipped)."""
    done: list[int] = []
    if not rows:
        return done
    with ledger.write() as s:
        for g in sorted(rows, key=lambda g: g.file_id):  # id order, as every writer locks rows
            changed = s.execute(
                update(File)
                .where(File.id == g.file_id, File.state == g.expected_state)
                .values(
                    state=state,
                    reason=reason,
                    message=clean_text(g.message, MAX_MESSAGE_CHARS),
                    next_poll_at=None,
                    updated_at=now,
                )
            )
            if changed.rowcount:  # type: ignore[attr-defined]  # CursorResult for an UPDATE
                done.append(g.file_id)
    return done


@dataclass(frozen=True, slots=True)
class Settled:
    """A `possible_duplicate` row whose copies on the server are known now."""

    file_id: int
    note: str  # appended to its message: what the check found and did


def clear_possible_duplicates(ledger: Ledger, rows: Sequence[Settled], *, now: float) -> list[int]:
    """Clear `possible_duplicate` on each row, its note appended to its message (a
    failed row keeps its reason and its message first), at `now`. Returns the ids
    cleared (a row already cleared is skipped)."""
    done: list[int] = []
    if not rows:
        return done
    with ledger.write() as s:
        for r in sorted(rows, key=lambda r: r.file_id):  # id order, as every writer locks rows
            current = s.execute(
                select(File.message).where(File.id == r.file_id, File.possible_duplicate.is_(True))
            ).first()
            if current is None:
                continue
            message = r.note if not current.message else current.message + NOTE_SEPARATOR + r.note
            s.execute(
                update(File)
                .where(File.id == r.file_id)
                .values(
                    possible_duplicate=False,
                    message=clean_text(message, MAX_MESSAGE_CHARS),
                    updated_at=now,
                )
            )
            done.append(r.file_id)
    return done


@dataclass(frozen=True, slots=True)
class Deletable:
    """A row `reka-ingest delete` may delete the image of."""

    id: int
    path: str
    image_id: str
    state: str
    seen_at: float


def deletable_rows(
    ledger: Ledger,
    *,
    path_glob: str | None = None,
    image_id: str | None = None,
    state: str | None = None,
    since: float | None = None,
    until: float | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> list[Deletable]:
    """Rows with an image id, not yet `deleted`, matching every filter given: the
    path as dropped (a glob), the image id, the state, and the time the file was
    found (`since <= seen_at < until`). Read in chunks; only matches are kept."""
    out: list[Deletable] = []
    last = 0
    while True:
        query = (
            select(File.id, File.path, File.image_id, File.state, File.seen_at)
            .where(File.id > last, File.image_id.is_not(None))
            .where(File.state != FileState.DELETED)
            .order_by(File.id)
            .limit(chunk_rows)
        )
        if image_id is not None:
            query = query.where(File.image_id == image_id)
        if state is not None:
            query = query.where(File.state == state)
        if since is not None:
            query = query.where(File.seen_at >= since)
        if until is not None:
            query = query.where(File.seen_at < until)
        with ledger.read() as s:
            rows = s.execute(query).all()
        if not rows:
            return out
        last = rows[-1].id
        out.extend(
            Deletable(r.id, r.path, r.image_id, r.state, r.seen_at)
            for r in rows
            if path_glob is None or fnmatch.fnmatchcase(r.path, path_glob)
        )


def rows_holding(ledger: Ledger, image_ids: Iterable[str]) -> list[Deletable]:
    """Every row not yet `deleted` that holds one of these image ids (an original and
    the duplicates that point at its image)."""
    ids = sorted(set(image_ids))
    out: list[Deletable] = []
    with ledger.read() as s:
        for i in range(0, len(ids), IN_CHUNK):
            out.extend(
                Deletable(r.id, r.path, r.image_id, r.state, r.seen_at)
                for r in s.execute(
                    select(File.id, File.path, File.image_id, File.state, File.seen_at)
                    .where(File.image_id.in_(ids[i : i + IN_CHUNK]))
                    .where(File.state != FileState.DELETED)
                    .order_by(File.id)
                )
            )
    return sorted(out, key=lambda d: d.id)

"""Read-only views of the ledger for `status`, `files` and metrics."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from reka_ingest.core.states import ACTIVE, NOT_ORIGINALS, FileState
from reka_ingest.ledger.counts import files_by_state
from reka_ingest.ledger.db import IN_CHUNK, Ledger
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


def oldest_by_state(session: Session, states: Iterable[str]) -> dict[str, tuple[str, float]]:
    """The first file seen in each of `states` that has any: state -> (path, seen_at).

    One probe per state on the (state, seen_at) index, each a single descent: an
    `ORDER BY seen_at LIMIT 1` over several states at once is planned as a walk
    of `seen_at` from the oldest file, which reads every final row before the
    first active one (active files are the newest).
    """
    out: dict[str, tuple[str, float]] = {}
    for state in states:
        row = session.execute(
            select(File.path, File.seen_at)
            .where(File.state == state)
            .order_by(File.seen_at)
            .limit(1)
        ).first()
        if row is not None:
            out[str(state)] = (row.path, row.seen_at)
    return out


def hashes_with_originals(ledger: Ledger, hashes: Iterable[str]) -> set[str]:
    """Those of `hashes` the ledger holds a live original of (queued, on its way or
    uploaded: a new file with those bytes would be recorded as its duplicate)."""
    ordered = sorted(set(hashes))
    found: set[str] = set()
    with ledger.read() as s:
        for i in range(0, len(ordered), IN_CHUNK):
            found.update(
                s.scalars(
                    select(File.sha256)
                    .where(File.sha256.in_(ordered[i : i + IN_CHUNK]))
                    .where(File.state.notin_(NOT_ORIGINALS))
                    .distinct()
                )
            )
    return found


def summary(ledger: Ledger, *, now: float) -> Summary:
    """Every query here is answered from an index or the counts table (see
    tests/ledger/test_query_plans.py); none reads more rows in a bigger ledger."""
    with ledger.read() as s:
        counts = files_by_state(s)  # the counts table: the same cost at any ledger size
        firsts = oldest_by_state(s, [state for state, n in counts.items() if n])
        recent = s.scalar(
            select(func.count()).where(File.finished_at.is_not(None), File.finished_at >= now - 60)
        )
        last_finished = s.scalar(select(func.max(File.finished_at)))
    active = [firsts[state] for state in sorted(ACTIVE) if state in firsts]
    oldest = min(active, key=lambda first: first[1]) if active else None
    files = {state.value: int(counts.get(state.value, 0)) for state in FileState}
    return Summary(
        files=files,
        total=sum(files.values()),
        oldest_waiting_path=oldest[0] if oldest else None,
        oldest_waiting_seen_at=oldest[1] if oldest else None,
        finished_last_minute=int(recent or 0),
        first_seen_at=min((seen for _, seen in firsts.values()), default=None),
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


# Rows read per query by `iter_files`: large enough that the per-query cost vanishes,
# small enough that a chunk of rows is a few MB.
EXPORT_CHUNK = 5_000


def iter_files(
    ledger: Ledger,
    columns: Sequence[str],
    *,
    state: FileState | None = None,
    limit: int | None = None,
    chunk: int = EXPORT_CHUNK,
) -> Iterator[tuple[Any, ...]]:
    """Every file row's `id` and `columns`, in id order (see `iter_file_chunks`)."""
    for rows in iter_file_chunks(ledger, ("id", *columns), state=state, limit=limit, chunk=chunk):
        yield from rows


def iter_file_chunks(
    ledger: Ledger,
    columns: Sequence[str],
    *,
    state: FileState | None = None,
    limit: int | None = None,
    chunk: int = EXPORT_CHUNK,
) -> Iterator[list[tuple[Any, ...]]]:
    """Every file row's `columns` (which must name `id`), in id order, a list of
    rows at a time: memory stays flat at any ledger size. Each chunk is one short
    read (keyset on the primary key, so each query is an index range scan), never a
    transaction held for the whole export; rows added meanwhile with higher ids are
    included.

    The rows are the database driver's own tuples, read on its cursor: an export of
    a million rows spends its time writing them, not wrapping them (SQLAlchemy's
    rows and result processing cost more than the read). Values are the driver's:
    a Boolean column reads as 0 or 1 on SQLite (see `reka_ingest.cli.export`)."""
    table = File.__table__
    key = list(columns).index("id")
    stmt = (
        select(*(table.c[name] for name in columns))
        .where(table.c.id > bindparam("after"))
        .order_by(table.c.id)
        .limit(bindparam("size"))
    )
    if state is not None:
        stmt = stmt.where(table.c.state == bindparam("state"))
    compiled = stmt.compile(dialect=ledger.engine.dialect)
    sql = str(compiled)
    after = 0
    left = limit
    while left is None or left > 0:
        size = chunk if left is None else min(chunk, left)
        values = compiled.construct_params(
            {"after": after, "size": size, "state": None if state is None else str(state.value)}
        )
        params: Any = (
            [values[name] for name in compiled.positiontup or ()] if compiled.positional else values
        )
        with ledger.read() as s:
            cursor = s.connection().connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.execute(sql, params)
                rows: list[tuple[Any, ...]] = list(cursor.fetchall())
            finally:
                cursor.close()
        if not rows:
            return
        yield rows
        after = rows[-1][key]
        if left is not None:
            left -= len(rows)
        if len(rows) < size:
            return


@dataclass(frozen=True, slots=True)
class DriverSql:
    """One statement as the driver takes it: qmark SQL and its parameters' names in
    order, with the values SQLAlchemy fixed itself (an OFFSET of 0)."""

    sql: str
    names: tuple[str, ...]
    fixed: dict[str, Any]

    def params(self, **values: Any) -> list[Any]:
        return [values[n] if n in values else self.fixed[n] for n in self.names]


@dataclass(frozen=True, slots=True)
class ChunkSql:
    """The driver's SQL of an export's chunks (see reka_ingest.cli.export_pair), for a
    process that reads the ledger with the driver alone: `span` (min and max id),
    `range` (rows with `lo < id <= hi`) and `tail` (the next `size` rows after
    `after`), each in id order and in `state` when it is not None."""

    span: DriverSql
    range: DriverSql
    tail: DriverSql
    state: str | None


def sqlite_chunk_sql(columns: Sequence[str], state: FileState | None = None) -> ChunkSql:
    """`ChunkSql` of `columns` for SQLite."""
    from sqlalchemy.dialects import sqlite  # noqa: PLC0415 - only an export needs it

    table = File.__table__
    dialect = sqlite.dialect()
    chosen = select(*(table.c[name] for name in columns)).order_by(table.c.id)
    ranged = chosen.where(table.c.id > bindparam("lo"), table.c.id <= bindparam("hi"))
    tail = chosen.where(table.c.id > bindparam("after"))
    if state is not None:
        ranged = ranged.where(table.c.state == bindparam("state"))
        tail = tail.where(table.c.state == bindparam("state"))
    tail = tail.limit(bindparam("size"))

    def driver(stmt: Any) -> DriverSql:
        compiled = stmt.compile(dialect=dialect)
        ours = dict.fromkeys(("lo", "hi", "after", "size", "state"))
        fixed = {k: v for k, v in compiled.construct_params(ours).items() if k not in ours}
        return DriverSql(str(compiled), tuple(compiled.positiontup or ()), fixed)

    return ChunkSql(
        span=driver(select(func.min(table.c.id), func.max(table.c.id))),
        range=driver(ranged),
        tail=driver(tail),
        state=None if state is None else str(state.value),
    )

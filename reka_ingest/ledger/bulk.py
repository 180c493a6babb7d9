"""Many rows of `files`, each with its own values, written by one statement.

`update_by_id` sends, per IN_CHUNK rows, as the driver's own SQL:
- on SQLite, `WITH v AS (VALUES (?, ...), ...) UPDATE files ... FROM v`;
- on PostgreSQL, `UPDATE files ... FROM unnest(%b::T[], ...) AS v`: one array a
  column (`unnest_arrays`, `array_params`, which the recorder's INSERT uses too),
  sent in PostgreSQL's binary format (`%b`: half the CPU of text for psycopg).
  psycopg turns each `%s` of a statement into `$n` in Python, and caches that only
  for short statements: a VALUES list of 500 rows of 22 columns cost it about 50 ms
  of CPU a statement, the arrays about 13 (and the statement's text is one for any
  number of rows).

Not an executemany: each row of one is a statement, and a statement on `files`
runs its count triggers (migration 0005) and, on SQLite, keeps a statement
journal (in memory: `SQLITE_PRAGMAS`); a row a statement costs several times
its share of one statement. Not SQLAlchemy's `values()` either:
compiling 100 rows of it cost more than the write. Each value goes through its
column's bind processing as an ORM write would; on SQLite numbers are cast in the
SET, as the VALUES columns have no type.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, cast

from sqlalchemy import Boolean, ColumnElement, Dialect, Float, Integer, Table, select
from sqlalchemy.orm import Session

from reka_ingest.core.states import FileState
from reka_ingest.ledger.db import IN_CHUNK
from reka_ingest.ledger.schema import File

_FILES = cast(Table, File.__table__)


def update_by_id(
    s: Session,
    columns: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
    same: dict[str, Any],
    *,
    only_in: FileState | None = None,
    counted: str | None = None,
) -> None:
    """Each row `(id, *its values of columns)` written to its file, and `same` to all of
    them. `only_in`: rows in another state are left alone (a retry, a sweep took them
    meanwhile). `counted`: an integer column each written row adds one to."""
    conn = s.connection()
    dialect = conn.dialect
    rows = sorted(rows, key=_first)  # chunks in id order: see `lock_in_id_order`
    names = ("id", *columns)
    process = [_processor(dialect, name) for name in names]
    fixed = [_processor(dialect, name)(value) for name, value in same.items()]
    # The guard is a value of each row (`v.held`), compared in the join: as a term on
    # `files` alone, SQLite built a Bloom filter for it by scanning the whole table
    # (500 rows of a poll round: 9 ms on an empty ledger, 490 at a million rows).
    held = () if only_in is None else (_processor(dialect, "state")(only_in),)
    types = (*names, *(("state",) if held else ()))  # the files columns v's columns are typed as
    arrays = dialect.name == "postgresql"
    for start in range(0, len(rows), IN_CHUNK):
        chunk = rows[start : start + IN_CHUNK]
        values: list[Any] = [
            v
            for row in chunk
            for v in (*(f(value) for f, value in zip(process, row, strict=True)), *held)
        ]
        sql = _update_sql(
            dialect,
            tuple(columns),
            tuple(same),
            None if arrays else len(chunk),
            guarded=bool(held),
            counted=counted,
        )
        # Placeholders in the statement's order: SET's, then FROM's (PostgreSQL), or
        # the VALUES list first (SQLite).
        params = [*fixed, *array_params(dialect, types, values)] if arrays else [*values, *fixed]
        if arrays:
            conn.exec_driver_sql(_LOCK_IDS, ([row[0] for row in chunk],))
        conn.exec_driver_sql(sql, tuple(params))


def in_id_order(condition: ColumnElement[bool]) -> ColumnElement[bool]:
    """The rows of `files` where `condition` holds, locked in id order before a
    statement writes them (an UPDATE's `where`).

    On PostgreSQL an UPDATE locks its rows in the order its plan meets them: two
    writers of overlapping rows (the watcher recording where a group's files went,
    a worker handing an image id to thousands of copies) met them in opposite
    orders and deadlocked. Every multi-row write of `files` that another may
    overlap locks in one order, ascending id (`update_by_id` does so too), so two
    such statements wait for each other at most, never in a cycle. SQLite (one
    writer at a time) renders no lock.
    """
    return File.id.in_(select(File.id).where(condition).order_by(File.id).with_for_update())


# `update_by_id`'s lock of a chunk's rows, in id order, before its UPDATE (PostgreSQL).
_LOCK_IDS = "SELECT id FROM files WHERE id = ANY(%s) ORDER BY id FOR UPDATE"


def _first(row: Sequence[Any]) -> Any:
    return row[0]


@functools.lru_cache(maxsize=64)
def _processor(dialect: Dialect, name: str) -> Callable[[Any], Any]:
    """The bind processing of a column of `files` on `dialect` (identity when it has none)."""
    processor = _FILES.c[name].type.bind_processor(dialect)
    return processor if processor is not None else _same


def _same(value: Any) -> Any:
    return value


@functools.lru_cache(maxsize=64)
def _update_sql(
    dialect: Dialect,
    columns: tuple[str, ...],
    same: tuple[str, ...],
    n: int | None,
    *,
    guarded: bool,
    counted: str | None,
) -> str:
    """`update_by_id`'s statement for `n` rows as a VALUES list, or (None) for arrays
    of any length (column names are ours, never input)."""
    if dialect.paramstyle not in ("qmark", "format", "pyformat"):
        raise ValueError(f"the ledger's driver binds {dialect.paramstyle!r}: not supported here")
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    sets = []
    for name in columns:
        kind = _FILES.c[name].type
        if n is not None and isinstance(kind, Float | Integer):
            sets.append(f"{name} = CAST(v.{name} AS {kind.compile(dialect=dialect)})")
        else:
            sets.append(f"{name} = v.{name}")
    sets += [f"{name} = {mark}" for name in same]
    if counted is not None:
        sets.append(f"{_FILES.c[counted].name} = files.{_FILES.c[counted].name} + 1")
    where = "files.id = v.id" + (" AND files.state = v.held" if guarded else "")
    names = ", ".join(("id", *columns, *(("held",) if guarded else ())))
    if n is None:
        rows = unnest_arrays(dialect, ("id", *columns, *(("state",) if guarded else ())))
        return f"UPDATE files SET {', '.join(sets)} FROM {rows} AS v ({names}) WHERE {where}"  # noqa: S608
    row = "(" + ", ".join([mark] * (len(columns) + 1 + guarded)) + ")"
    return (
        f"WITH v ({names}) AS (VALUES {', '.join([row] * n)}) "  # noqa: S608
        f"UPDATE files SET {', '.join(sets)} FROM v WHERE {where}"
    )


def unnest_arrays(dialect: Dialect, names: Sequence[str]) -> str:
    """PostgreSQL's `unnest(%b::T[], ...)`: rows of values of the types of the `files`
    columns `names`, sent as one array parameter a column (`array_params`)."""
    return "unnest(" + ", ".join(f"%b::{_array_of(dialect, name)[0]}" for name in names) + ")"


def array_params(dialect: Dialect, names: Sequence[str], values: Sequence[Any]) -> list[list[Any]]:
    """`values` (row after row, a value for each of `names`, bind-processed) as one list
    a column, for `unnest_arrays`. Each list holds one Python type: psycopg dumps no
    list of mixed types (an int among a column's floats, a bool among its ints)."""
    width = len(names)
    out = []
    for i, name in enumerate(names):
        column = list(values[i::width])
        kind = _array_of(dialect, name)[1]
        out.append(column if kind is None else [None if v is None else kind(v) for v in column])
    return out


@functools.lru_cache(maxsize=64)
def _array_of(dialect: Dialect, name: str) -> tuple[str, Callable[[Any], Any] | None]:
    """The array type of a `files` column on `dialect`, and the Python type its
    values are made (None: as bind processing left them)."""
    kind = _FILES.c[name].type
    # Boolean first: a bool is an int, and no int belongs in a boolean column's list.
    python: Callable[[Any], Any] | None = (
        bool
        if isinstance(kind, Boolean)
        else float
        if isinstance(kind, Float)
        else int
        if isinstance(kind, Integer)
        else None
    )
    return f"{kind.compile(dialect=dialect)}[]", python

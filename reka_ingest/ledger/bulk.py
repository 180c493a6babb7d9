"""Many rows of `files`, each with its own values, written by one statement.

`update_by_id` sends `WITH v AS (VALUES ...) UPDATE files ... FROM v` per IN_CHUNK
rows, as the driver's own SQL (SQLite, PostgreSQL). Not an executemany: each row
of one is a statement, and a statement on `files` runs its count triggers (migration
0005) and, on SQLite, spills its statement journal to a temporary file once the
indexes it touches pass 64 KiB: about 120 µs a row, against about 50 in one
statement. Not SQLAlchemy's `values()` either: compiling 100 rows of it cost more
than the write. Each value goes through its column's bind processing as an ORM
write would; numbers are cast in the SET, since PostgreSQL types a VALUES column
holding only NULLs as text.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, cast

from sqlalchemy import Dialect, Float, Integer, Table
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
    names = ("id", *columns)
    process = [_processor(dialect, name) for name in names]
    fixed = [(name, _processor(dialect, name)(value)) for name, value in same.items()]
    guard = [] if only_in is None else [_processor(dialect, "state")(only_in)]
    for start in range(0, len(rows), IN_CHUNK):
        chunk = rows[start : start + IN_CHUNK]
        params: list[Any] = [
            f(value) for row in chunk for f, value in zip(process, row, strict=True)
        ]
        params += [value for _, value in fixed]
        params += guard
        sql = _update_sql(
            dialect,
            tuple(columns),
            tuple(name for name, _ in fixed),
            len(chunk),
            guarded=only_in is not None,
            counted=counted,
        )
        conn.exec_driver_sql(sql, tuple(params))


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
    n: int,
    *,
    guarded: bool,
    counted: str | None,
) -> str:
    """`update_by_id`'s statement for `n` rows (column names are ours, never input)."""
    if dialect.paramstyle not in ("qmark", "format", "pyformat"):
        raise ValueError(f"the ledger's driver binds {dialect.paramstyle!r}: not supported here")
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    row = "(" + ", ".join([mark] * (len(columns) + 1)) + ")"
    sets = []
    for name in columns:
        kind = _FILES.c[name].type
        if isinstance(kind, Float | Integer):
            sets.append(f"{name} = CAST(v.{name} AS {kind.compile(dialect=dialect)})")
        else:
            sets.append(f"{name} = v.{name}")
    sets += [f"{name} = {mark}" for name in same]
    if counted is not None:
        sets.append(f"{_FILES.c[counted].name} = files.{_FILES.c[counted].name} + 1")
    where = "files.id = v.id" + (f" AND files.state = {mark}" if guarded else "")
    return (
        f"WITH v (id, {', '.join(columns)}) AS (VALUES {', '.join([row] * n)}) "  # noqa: S608
        f"UPDATE files SET {', '.join(sets)} FROM v WHERE {where}"
    )

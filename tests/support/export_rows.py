"""Ledger rows for the export tests: every state, text a CSV or JSON writer must quote
or escape, names that are not ASCII, inserted in bulk."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from sqlalchemy import Table, insert
from sqlalchemy.sql.schema import ScalarElementColumnDefault

from reka_ingest.core.states import FileState
from reka_ingest.ledger import Ledger
from reka_ingest.ledger.bulk import array_params, unnest_arrays
from reka_ingest.ledger.schema import File

STATES = [FileState.INDEXED, FileState.FAILED, FileState.DUPLICATE, FileState.INDEXING]
ODD = ['comma, "quoted"', "line\nbreak", "tab\there", "Ærø/😀.jpg", "back\\slash", ""]


def fill_files(
    ledger: Ledger,
    n: int,
    *,
    gap: int | None = None,
    seen_at: Callable[[int], float] = lambda i: 1000.0 + i,
    indexed_at: Callable[[int], float] = lambda i: 1010.5 + i,
    extra: Callable[[int], dict[str, Any]] = lambda i: {},
) -> None:
    """`n` file rows; with `gap`, row i gets id `i * gap` (ids with holes)."""
    rows: list[dict[str, Any]] = []
    for i in range(1, n + 1):
        state = STATES[i % len(STATES)]
        row: dict[str, Any] = {
            "path": f"site-{i % 7}/{ODD[i % len(ODD)]}-{i}.jpg",
            "source_root": "/inbox",
            "work_path": f"/work/{i}.jpg",
            "origin": "scan",
            "size": 1000 + i,
            "mtime": 1.0,
            "sha256": f"{i:064x}",
            "state": state,
            "reason": "not_an_image" if state == FileState.FAILED else None,
            "message": f"why {ODD[i % len(ODD)]}" if state == FileState.FAILED else None,
            "image_id": f"img-{i}" if state != FileState.FAILED else None,
            "seen_at": seen_at(i),
            "indexed_at": indexed_at(i) if state == FileState.INDEXED else None,
            "updated_at": 1000.0 + i,
            **extra(i),
        }
        if gap is not None:
            row["id"] = i * gap
        rows.append(row)
    # Many rows a statement, as the recorder writes them: a statement a row fires the
    # count trigger each time. SQLite: RETURNING makes SQLAlchemy send multi-row
    # INSERTs ("insertmanyvalues"); PostgreSQL: one array a column (psycopg would parse
    # every placeholder of a VALUES list in Python).
    table = cast(Table, File.__table__)
    with ledger.write() as s:
        if ledger.is_sqlite:
            s.execute(insert(table).returning(table.c.id), rows)
            return
        conn = s.connection()
        given = tuple(rows[0])
        defaults = {  # what SQLAlchemy's INSERT would add: the columns' Python defaults
            c.name: c.default.arg
            for c in table.c
            if c.name not in given and isinstance(c.default, ScalarElementColumnDefault)
        }
        keys = (*given, *defaults)
        values = [v for row in rows for v in (*(row[k] for k in given), *defaults.values())]
        arrays = unnest_arrays(conn.dialect, keys)
        sql = f"INSERT INTO files ({', '.join(keys)}) SELECT * FROM {arrays}"  # noqa: S608 - our names
        conn.exec_driver_sql(sql, tuple(array_params(conn.dialect, keys, values)))

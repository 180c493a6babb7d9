"""`files --csv / --json` rows as text the database joins: a million rows
without a Python object per value.

For a format and an SQL dialect, `plan()` gives one query's select list: the
row's id (the export's keyset), then, in FILE_FIELDS order, runs of fields the
database joins into one text with their separators (and JSON keys), and the
float fields, read as floats: Python's float repr (and `round`, for
`seconds_to_indexed`) is not something SQL reproduces, so those few values are
formatted in Python, a column at a time, as reka_ingest.cli.export does.

The database writes each text value as it is (CSV: NULL as empty; JSON: in
quotes, NULL as `null`), never quoted or escaped: deciding that per value in SQL
(`instr`, `GLOB`, `json_quote`) costs more than the Python it replaces. Instead
`lines()` checks a whole chunk at once, which is exact because the separators
are constants: a chunk whose text holds no `"`, CR or LF and exactly its
separators' commas has no CSV field to quote; one with no backslash, no control
character and exactly its keys' quotes plus two per non-NULL text (counted by
the query) has no JSON string to escape. Only in a chunk that fails are the rows
looked at one by one, and a row that needs quoting or escaping is written by
reka_ingest.cli.export from its raw values (read again, in their own query).
tests/ledger/test_export_sql.py holds the bytes to csv.writer's and
json.dumps's on both ledgers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, TextIO

from sqlalchemy.types import TypeDecorator

from reka_ingest.cli.export import (
    COLUMNS,
    FILE_FIELDS,
    KINDS,
    columns_of,
    csv_header,
    csv_number,
    csv_rows,
    json_number,
    json_rows,
)
from reka_ingest.core.states import FileState
from reka_ingest.ledger.db import Ledger
from reka_ingest.ledger.queries import file_rows, iter_file_chunks
from reka_ingest.ledger.schema import File

# Rows per query: texts of a few hundred bytes, so a chunk is a few MB.
SQL_EXPORT_CHUNK: Final = 10_000

Format = Literal["csv", "json"]


def _is_float(name: str) -> bool:
    if name == "seconds_to_indexed":
        return True
    column_type = File.__table__.c[name].type
    if isinstance(column_type, TypeDecorator):
        column_type = column_type.impl_instance
    return column_type.python_type is float


FLOATS: Final = frozenset(name for name in FILE_FIELDS if _is_float(name))
_KIND_OF: Final = dict(zip(FILE_FIELDS, KINDS, strict=True))


def _literal(text: str, postgresql: bool) -> str:
    """An SQL string literal of `text` (this module's constants only)."""
    escaped = text.replace("'", "''")
    return f"'{escaped}'"


def _csv_field(name: str, postgresql: bool) -> str:
    kind = _KIND_OF[name]
    if kind == "bool":
        return f"CASE WHEN {name} THEN 'True' WHEN NOT {name} THEN 'False' ELSE '' END"
    if kind == "number" and postgresql:
        return f"coalesce(CAST({name} AS TEXT), '')"
    return f"coalesce({name}, '')"


def _json_field(name: str, postgresql: bool) -> str:
    kind = _KIND_OF[name]
    if kind == "bool":
        return f"CASE WHEN {name} THEN 'true' WHEN NOT {name} THEN 'false' ELSE 'null' END"
    if kind == "number":
        return (
            f"coalesce(CAST({name} AS TEXT), 'null')" if postgresql else f"coalesce({name}, 'null')"
        )
    return f"coalesce('\"' || {name} || '\"', 'null')"


def _before(name: str, index: int, fmt: Format) -> str:
    """What the format writes before a field's value: its separator (and key)."""
    if fmt == "csv":
        return "" if index == 0 else ","
    return ("{" if index == 0 else ", ") + json.dumps(name) + ": "


@dataclass(frozen=True, slots=True)
class Plan:
    """One export query and how its rows become text.

    `select`: the id, then one item per part (a text run or a float column), and
    for JSON the count of non-NULL texts last. `texts`: the text parts' positions
    in a row. `floats`: per float part, its position and the float column it
    shows (`seconds_to_indexed`: computed from the seen_at and indexed_at parts).
    `row`: a `%` template over the parts, the row's end included. `marks`: the
    commas (CSV) or quotes (JSON) the text parts' constants hold per row."""

    fmt: Format
    select: tuple[str, ...]
    texts: tuple[int, ...]
    floats: tuple[tuple[int, str], ...]
    row: str
    marks: int


def plan(fmt: Format, *, postgresql: bool) -> Plan:
    field = _csv_field if fmt == "csv" else _json_field
    select: list[str] = ["id"]
    texts: list[int] = []
    floats: list[tuple[int, str]] = []
    template: list[str] = []
    run: list[str] = []
    constants: list[str] = []

    def close_run() -> None:
        if run:
            texts.append(len(select))
            select.append(" || ".join(run))
            template.append("%s")
            run.clear()

    for index, name in enumerate(FILE_FIELDS):
        before = _before(name, index, fmt)
        if name in FLOATS:
            close_run()
            floats.append((len(select), name))
            template.append(before.replace("%", "%%") + "%s")
            select.append(name if name != "seconds_to_indexed" else "NULL")
        else:
            if before:
                run.append(_literal(before, postgresql))
                constants.append(before)
            run.append(field(name, postgresql))
    if fmt == "json":
        run.append("'}'")
    close_run()
    end = "\r\n" if fmt == "csv" else ""
    mark = "," if fmt == "csv" else '"'
    if fmt == "json":
        nulls = [f"({n} IS NOT NULL)" for n, kind in _KIND_OF.items() if kind == "text"]
        select.append(
            " + ".join(f"CAST({n} AS INTEGER)" for n in nulls) if postgresql else " + ".join(nulls)
        )
    return Plan(
        fmt,
        tuple(select),
        tuple(texts),
        tuple(floats),
        "".join(template) + end,
        sum(c.count(mark) for c in constants),
    )


def _floats(plan: Plan, cols: Sequence[Sequence[Any]]) -> list[tuple[int, list[str]]]:
    """Each float part's column of texts, by its position in the select list."""
    at = {name: position for position, name in plan.floats}
    number = csv_number if plan.fmt == "csv" else json_number
    out: list[tuple[int, list[str]]] = []
    for position, name in plan.floats:
        if name == "seconds_to_indexed":
            values: Sequence[Any] = [
                None if indexed is None else round(indexed - seen, 3)
                for indexed, seen in zip(cols[at["indexed_at"]], cols[at["seen_at"]], strict=True)
            ]
        else:
            values = cols[position]
        out.append((position, number(values)))
    return out


# Bytes a JSON string must not hold to be written as is: controls and the
# backslash (a quote is counted instead).
_ESCAPED: Final = bytes(range(0x20)) + b"\\"


def _clean(plan: Plan, text: str, rows: int, nonnull: int) -> bool:
    """Whether `text` (`rows` rows' text parts) holds nothing to quote or escape."""
    if plan.fmt == "csv":
        return (
            '"' not in text
            and "\r" not in text
            and "\n" not in text
            and text.count(",") == rows * plan.marks
        )
    if text.count('"') != rows * plan.marks + 2 * nonnull:
        return False
    data = text.encode("utf-8", "surrogatepass")
    return len(data.translate(None, _ESCAPED)) == len(data)


def lines(
    plan: Plan,
    rows: Sequence[tuple[Any, ...]],
    rewrite: Callable[[list[int]], dict[int, str]],
) -> list[str]:
    """Each row's text (CSV: its line, CRLF ended; JSON: its object). A row with
    a value to quote or escape is written by `rewrite` (ids -> text) instead."""
    if not rows:
        return []
    cols: list[Sequence[Any]] = list(zip(*rows, strict=True))
    by_position: dict[int, Sequence[Any]] = {position: cols[position] for position in plan.texts}
    by_position.update(_floats(plan, cols))
    parts = [by_position[position] for position in sorted(by_position)]
    text_cols = [cols[position] for position in plan.texts]
    nonnull = cols[-1] if plan.fmt == "json" else ()
    out = list(map(plan.row.__mod__, zip(*parts, strict=True)))
    if _clean(plan, "".join("".join(c) for c in text_cols), len(rows), sum(nonnull)):
        return out
    dirty = [
        i
        for i, texts in enumerate(zip(*text_cols, strict=True))
        if not _clean(plan, "".join(texts), 1, nonnull[i] if nonnull else 0)
    ]
    ids = cols[0]
    again = rewrite([ids[i] for i in dirty])
    for i in dirty:
        out[i] = again.get(ids[i], "")
    return [line for line in out if line]


def write(
    ledger: Ledger,
    fmt: Format,
    out: TextIO,
    *,
    state: FileState | None = None,
    limit: int | None = None,
    chunk: int = SQL_EXPORT_CHUNK,
) -> None:
    """The export, one write per chunk: CSV with its header row, or a JSON array
    with one object per line (what reka_ingest.cli.export's writers write)."""
    the_plan = plan(fmt, postgresql=not ledger.is_sqlite)
    key = COLUMNS.index("id")
    end = "\r\n" if fmt == "csv" else ""
    texts_of = csv_rows if fmt == "csv" else json_rows

    def rewrite(ids: list[int]) -> dict[int, str]:
        rows = file_rows(ledger, COLUMNS, ids)
        if not rows:
            return {}
        texts = texts_of(columns_of(rows))
        return {row[key]: text + end for row, text in zip(rows, texts, strict=True)}

    chunks = iter_file_chunks(ledger, the_plan.select, state=state, limit=limit, chunk=chunk)
    if fmt == "csv":
        out.write(csv_header())
        for rows in chunks:
            out.write("".join(lines(the_plan, rows, rewrite)))
        return
    out.write("[")
    separator = "\n"
    for rows in chunks:
        texts = lines(the_plan, rows, rewrite)
        if texts:
            out.write(separator + ",\n".join(texts))
            separator = ",\n"
    out.write("\n]\n")

"""`files --csv / --json` write, for any values, the bytes `csv.writer` and
`json.dumps(record, ensure_ascii=False)` write (reka_ingest.cli.export builds them
a column at a time, and splits JSON arrays on "\\x00")."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from reka_ingest.cli.export import (
    COLUMNS,
    FILE_FIELDS,
    KINDS,
    _number_items,
    _text_items,
    write_csv,
    write_json,
)

_KIND_OF = dict(zip(FILE_FIELDS, KINDS, strict=True))
# Text as a ledger stores it: any str but NUL and lone surrogates
# (reka_ingest.ledger.columns), with what a CSV or JSON writer must quote or escape.
_TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from(',"\r\n\t\\\b\f\x01\x1f\x7f\u2028 é😀'),
        st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
    ),
    max_size=20,
)
_NUMBER = st.one_of(
    st.none(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
)
_BOOL = st.sampled_from([0, 1, True, False])  # SQLite gives 0/1, PostgreSQL a bool
_VALUE = {"text": st.one_of(st.none(), _TEXT), "number": _NUMBER, "bool": _BOOL}


@st.composite
def driver_row(draw: st.DrawFn) -> tuple[Any, ...]:
    row = [draw(_VALUE[_KIND_OF[name]]) for name in COLUMNS]
    # The two times seconds_to_indexed is computed from: floats (or no indexed_at).
    row[COLUMNS.index("seen_at")] = draw(st.floats(-1e12, 1e12))
    row[COLUMNS.index("indexed_at")] = draw(st.one_of(st.none(), st.floats(-1e12, 1e12)))
    return tuple(row)


def _record(row: tuple[Any, ...]) -> list[Any]:
    """What the export means by a row: FILE_FIELDS order, booleans as bool."""
    values = dict(zip(COLUMNS, row, strict=True))
    indexed, seen = values["indexed_at"], values["seen_at"]
    values["seconds_to_indexed"] = None if indexed is None else round(indexed - seen, 3)
    values["possible_duplicate"] = bool(values["possible_duplicate"])
    return [values[name] for name in FILE_FIELDS]


_CHUNKS = st.lists(st.lists(driver_row(), min_size=1, max_size=6), max_size=4)


@settings(max_examples=200, deadline=None)
@given(chunks=_CHUNKS)
def test_csv_is_csv_writers_bytes(chunks: list[list[tuple[Any, ...]]]) -> None:
    got = io.StringIO()
    write_csv(chunks, got)
    want = io.StringIO()
    writer = csv.writer(want)
    writer.writerow(FILE_FIELDS)
    writer.writerows(_record(row) for rows in chunks for row in rows)
    assert got.getvalue() == want.getvalue()


@settings(max_examples=200, deadline=None)
@given(chunks=_CHUNKS)
def test_json_is_json_dumps_bytes(chunks: list[list[tuple[Any, ...]]]) -> None:
    got = io.StringIO()
    write_json(chunks, got)
    records = [
        json.dumps(dict(zip(FILE_FIELDS, _record(row), strict=True)), ensure_ascii=False)
        for rows in chunks
        for row in rows
    ]
    want = "[" + ("\n" + ",\n".join(records) if records else "") + "\n]\n"
    assert got.getvalue() == want


# Numbers where orjson's text and json's may part: exponents both ways, around 1e-4
# and 1e16, NaN and the infinities (null to orjson), ints past 64 bits (orjson's
# error), and the bools and texts a SQLite column of numbers can hold.
_ANY_NUMBER = st.one_of(
    _NUMBER,
    st.floats(-1e-3, 1e-3),
    st.floats(1e15, 1e18),
    st.sampled_from([1e-4, 9.9e-05, 1e16, 9999999999999998.0, 1e-07, -0.0, 5e-324]),
    st.integers(),
    st.booleans(),
    _TEXT,
)


@settings(max_examples=300, deadline=None)
@given(values=st.lists(_ANY_NUMBER, max_size=40))
def test_a_column_of_numbers_is_json_dumps_text_of_each(values: list[Any]) -> None:
    """orjson writes a column of numbers (reka_ingest.cli.export._number_items):
    each value's text is json.dumps's own, whatever the column holds."""
    want = [json.dumps(v, ensure_ascii=False) for v in values]
    assert _number_items(tuple(values)) == want


@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.one_of(_TEXT, st.none(), _NUMBER), max_size=40))
def test_a_column_of_texts_is_json_dumps_text_of_each(values: list[Any]) -> None:
    """A text column's JSON (reka_ingest.cli.export._text_items), whatever SQLite's
    loose typing left in it: each value's text is json.dumps's own."""
    want = [json.dumps(v, ensure_ascii=False) for v in values]
    assert _text_items(tuple(values)) == want

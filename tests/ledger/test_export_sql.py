"""The export whose row text the database joins (reka_ingest.cli.export_sql)
writes, for any values a ledger holds, the bytes of the export that formats
every value in Python (reka_ingest.cli.export, itself held to csv.writer's and
json.dumps's bytes by tests/ledger/test_export_format.py): on both ledgers,
with text to quote or escape in any field, NULLs, booleans, extreme integers and
floats, across chunk boundaries."""

from __future__ import annotations

import io
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Table, delete, insert

from reka_ingest.cli import export_sql
from reka_ingest.cli.export import COLUMNS, write_csv, write_json
from reka_ingest.core.states import FileState, Origin
from reka_ingest.ledger import Ledger
from reka_ingest.ledger.queries import iter_file_chunks
from reka_ingest.ledger.schema import File

# Text as a ledger stores it: no NUL, no lone surrogate (reka_ingest.ledger.columns),
# with what a CSV or JSON writer must quote or escape.
_TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from(',"\r\n\t\\\b\f\x01\x1f\x7f\u2028 é😀:{}'),
        st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
    ),
    max_size=12,
)
_MAYBE = st.one_of(st.none(), _TEXT)
_FLOAT = st.floats(allow_nan=False, allow_infinity=True)
_TIME = st.floats(-1e12, 1e12)


@st.composite
def _row(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "path": draw(_TEXT),
        "source_root": "/inbox",
        "origin": draw(st.sampled_from(list(Origin))).value,
        "size": draw(st.integers(-(2**63), 2**63 - 1)),
        "mtime": 1.0,
        "sha256": draw(_MAYBE),
        "state": draw(st.sampled_from(list(FileState))).value,
        "reason": draw(_MAYBE),
        "message": draw(_MAYBE),
        "image_id": draw(_MAYBE),
        "image_url": draw(_MAYBE),
        "indexing_status": draw(st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1))),
        "upload_timestamp": draw(st.one_of(st.none(), _FLOAT)),
        "possible_duplicate": draw(st.booleans()),
        "upload_request_id": draw(_MAYBE),
        "conversion": draw(_MAYBE),
        "seen_at": draw(_TIME),
        "uploaded_at": draw(st.one_of(st.none(), _FLOAT)),
        "indexed_at": draw(st.one_of(st.none(), _TIME)),
        "final_path": draw(_MAYBE),
        "updated_at": 1.0,
    }


def _refill(ledger: Ledger, rows: list[dict[str, Any]]) -> None:
    table = cast(Table, File.__table__)
    with ledger.write() as s:
        s.execute(delete(table))
        for i, row in enumerate(rows):
            s.execute(insert(table), {**row, "work_path": f"/work/{i}-{row['path']}"})


def _python_export(ledger: Ledger, fmt: str) -> str:
    out = io.StringIO()
    chunks = iter_file_chunks(ledger, COLUMNS, chunk=3)
    (write_csv if fmt == "csv" else write_json)(chunks, out)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["csv", "json"])
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=st.lists(_row(), max_size=12), chunk=st.integers(1, 5))
def test_sql_export_is_the_python_exports_bytes(
    ledger: Ledger, fmt: str, rows: list[dict[str, Any]], chunk: int
) -> None:
    _refill(ledger, rows)
    got = io.StringIO()
    export_sql.write(ledger, "csv" if fmt == "csv" else "json", got, chunk=chunk)
    assert got.getvalue() == _python_export(ledger, fmt)

"""`reka-ingest files --csv / --json`: every row, in id order, valid, streamed in chunks."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.types import TypeDecorator
from typer.testing import CliRunner

from reka_ingest.cli.export import FILE_FIELDS, KINDS
from reka_ingest.cli.main import app
from reka_ingest.core.settings import Settings
from reka_ingest.core.states import FileState
from reka_ingest.ledger import Ledger
from reka_ingest.ledger.queries import iter_files, list_files
from reka_ingest.ledger.schema import File
from tests.support.export_rows import STATES, fill_files

ROWS = 12_345  # more than two export chunks


def fill(ledger: Ledger, n: int) -> None:
    fill_files(ledger, n)


@pytest.fixture
def filled(ledger: Ledger) -> Ledger:
    fill(ledger, ROWS)
    return ledger


@pytest.fixture
def small(ledger: Ledger) -> Ledger:
    """Enough rows for chunks of up to 400 to cross many boundaries, few enough to read
    whole on every example."""
    fill(ledger, 1_500)
    return ledger


@pytest.fixture
def env(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch, filled: Ledger
) -> Settings:
    s = make_settings()
    monkeypatch.setenv("INGEST_DATA_DIR", str(s.ingest.data_dir))
    monkeypatch.setenv("INGEST_DATABASE_URL", s.ingest.ledger_url)
    return s


def test_csv_has_every_row_in_order(env: Settings, filled: Ledger) -> None:
    result = CliRunner().invoke(app, ["files", "--csv"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    expected = list_files(filled)
    assert len(rows) == ROWS
    assert [int(r["id"]) for r in rows] == [f.id for f in expected]
    assert [r["path"] for r in rows] == [f.path for f in expected]
    assert list(rows[0]) == list(FILE_FIELDS)
    failed = next(r for r in rows if r["state"] == "failed")
    assert failed["message"].startswith("why ")
    indexed = next(r for r in rows if r["state"] == "indexed")
    assert float(indexed["seconds_to_indexed"]) == pytest.approx(10.5)


def test_json_is_one_valid_array_of_every_row(env: Settings, filled: Ledger) -> None:
    result = CliRunner().invoke(app, ["files", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    expected = list_files(filled)
    assert [d["id"] for d in data] == [f.id for f in expected]
    assert [d["path"] for d in data] == [f.path for f in expected]
    assert all(list(d) == list(FILE_FIELDS) for d in data[:50])


def test_state_and_limit_select_across_chunks(env: Settings, filled: Ledger) -> None:
    result = CliRunner().invoke(app, ["files", "--json", "--state", "failed", "--limit", "3001"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    failed = [f.id for f in list_files(filled, state=FileState.FAILED)]
    assert [d["id"] for d in data] == failed[:3001]
    assert {d["state"] for d in data} == {"failed"}
    empty = CliRunner().invoke(app, ["files", "--json", "--state", "expired"])
    assert json.loads(empty.stdout) == []


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    chunk=st.integers(1, 400),
    limit=st.one_of(st.none(), st.integers(1, 1600)),
    state=st.one_of(st.none(), st.sampled_from(STATES)),
)
def test_chunked_reading_equals_one_query(
    small: Ledger, chunk: int, limit: int | None, state: FileState | None
) -> None:
    got = [r[0] for r in iter_files(small, ["path"], state=state, limit=limit, chunk=chunk)]
    assert got == [f.id for f in list_files(small, state=state, limit=limit)]


def test_field_kinds_are_the_schema_column_types() -> None:
    """export.KINDS is spelled out (its helper process imports no SQLAlchemy): it must
    say what the ledger's column types say."""

    def kind(name: str) -> str:
        if name == "seconds_to_indexed":
            return "number"
        column_type = File.__table__.c[name].type
        if isinstance(column_type, TypeDecorator):  # the ledger's text types
            column_type = column_type.impl_instance
        python_type = column_type.python_type
        return "bool" if python_type is bool else "text" if python_type is str else "number"

    assert tuple(kind(name) for name in FILE_FIELDS) == KINDS

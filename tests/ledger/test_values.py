"""Real values are stored, on SQLite and PostgreSQL alike: byte counts past 2 GiB,
foreign strings longer than their column, NUL, lone surrogates, anywhere.

Each write goes through the ledger's real functions (intake, the upload's
answer, a poll, a release, a failure), none of which cleans these columns
itself: the column types do (reka_ingest.ledger.columns). The property test
then writes any str into every text column, and any JSON into the sidecar.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Table, select, text, update

from reka_ingest.core.states import FileState, Origin, Reason
from reka_ingest.ledger import Ledger
from reka_ingest.ledger.columns import BoundedString, SafeText, storable, storable_json
from reka_ingest.ledger.intake import NewFile, create_batch, record_files
from reka_ingest.ledger.polling import PollOutcome, record_polls
from reka_ingest.ledger.queries import list_files
from reka_ingest.ledger.schema import Base, Batch, File
from reka_ingest.ledger.uploads import (
    Uploaded,
    claim_batch,
    fail_files,
    finish_batch,
    record_uploaded,
    release_batch,
)

GIB = 1024**3
NOW = 1000.0


def _new(name: str, *, size: int = 10, sha: str | None = None, **kw: Any) -> NewFile:
    return NewFile(
        path=name,
        source_root="/in",
        work_path=f"/work/{name}",
        origin=Origin.EVENT,
        size=size,
        mtime=1.0,
        sha256=sha or (name.encode("utf-8", "surrogateescape").hex() + "0" * 64)[:64],
        seen_at=5.0,
        **kw,
    )


def _uploaded(file_id: int, *, image_id: str, image_url: str) -> Uploaded:
    return Uploaded(
        file_id=file_id,
        image_id=image_id,
        image_url=image_url,
        indexing_status=1,
        upload_timestamp=NOW,
        state=FileState.INDEXING,
        next_poll_at=NOW + 5,
        poll_delay=5.0,
    )


def _batch(ledger: Ledger, batch_id: int) -> Batch:
    with ledger.read() as s:
        return s.execute(select(Batch).where(Batch.id == batch_id)).scalar_one()


def test_a_3_gib_file_is_recorded_batched_and_counted(ledger: Ledger) -> None:
    [big] = record_files(ledger, [_new("huge.tif", size=3 * GIB)], now=NOW)
    [small] = record_files(ledger, [_new("small.jpg", size=5)], now=NOW)
    batch_id = create_batch(ledger, [big.file_id, small.file_id], now=NOW)
    assert _batch(ledger, batch_id).total_bytes == 3 * GIB + 5
    claimed = claim_batch(ledger, batch_id, now=NOW, lease=60.0)
    assert claimed is not None
    assert {f.size for f in claimed.files} == {3 * GIB, 5}
    rows = {f.path: f for f in list_files(ledger)}
    assert rows["huge.tif"].size == 3 * GIB


def test_a_300_char_request_id_is_stored_cut_and_a_long_image_id_whole(ledger: Ledger) -> None:
    [rec] = record_files(ledger, [_new("a.jpg")], now=NOW)
    [copy] = record_files(ledger, [_new("a-copy.jpg", sha=_new("a.jpg").sha256)], now=NOW)
    assert copy.state == FileState.DUPLICATE
    batch_id = create_batch(ledger, [rec.file_id], now=NOW)
    request_id = "req-" + "r" * 296
    image_id = "img-" + "i" * 296
    record_uploaded(
        ledger,
        [_uploaded(rec.file_id, image_id=image_id, image_url="https://x/" + "u" * 5000)],
        request_id=request_id,
        now=NOW,
    )
    finish_batch(ledger, batch_id, now=NOW, request_id=request_id)
    rows = {f.path: f for f in list_files(ledger)}
    row = rows["a.jpg"]
    assert row.upload_request_id == request_id[:125] + "..."
    assert _batch(ledger, batch_id).request_id == request_id[:125] + "..."
    assert row.image_id == image_id  # sent back to poll: never cut at this length
    assert rows["a-copy.jpg"].image_id == image_id  # and found by it, handed to its copy
    assert row.image_url == "https://x/" + "u" * 5000


def test_nul_and_lone_surrogates_in_every_kind_of_text(ledger: Ledger) -> None:
    sidecar: dict[str, object] = {"title": "a\x00b", "k\x00": ["\udce9", {"n": 1.5}], "ok": True}
    recs = record_files(
        ledger,
        [
            _new("caf\udce9.jpg", sidecar=sidecar),
            _new("nul\x00name.jpg"),
            _new("bad.jpg", reason=Reason.NOT_AN_IMAGE, message="said \x00 and \ud800"),
        ],
        now=NOW,
    )
    by_path = {r.work_path: r.file_id for r in recs}
    cafe, nul = by_path["/work/caf\udce9.jpg"], by_path["/work/nul\x00name.jpg"]
    batch_id = create_batch(ledger, [cafe, nul], now=NOW)
    release_batch(
        ledger, batch_id, now=NOW, error="connection reset \x00 by \udcff peer", hold=None
    )
    assert _batch(ledger, batch_id).last_error == "connection reset \\0 by %FF peer"
    record_uploaded(
        ledger,
        [_uploaded(cafe, image_id="img-\x00-1", image_url="https://x/\udc80")],
        request_id="req\x00",
        now=NOW,
    )
    record_polls(
        ledger,
        [
            PollOutcome(
                file_id=cafe,
                state=FileState.FAILED,
                indexing_status=3,
                image_url=None,
                request_id="poll\x00\ud800",
                reason=Reason.INDEXING_FAILED,
                message="indexing said \x00",
            )
        ],
        now=NOW,
    )
    fail_files(ledger, [nul], Reason.UPLOAD_FAILED, "gave up: \x00", now=NOW)

    rows = {f.id: f for f in list_files(ledger)}
    c, n = rows[cafe], rows[nul]
    assert (c.path, c.work_path) == ("caf%E9.jpg", "/work/caf%E9.jpg")
    assert c.sidecar == {"title": "a\\0b", "k\\0": ["%E9", {"n": 1.5}], "ok": True}
    assert (c.image_id, c.image_url) == ("img-\\0-1", "https://x/%80")
    assert (c.upload_request_id, c.poll_request_id) == ("req\\0", "poll\\0%D800")
    assert c.message == "indexing said \\0"
    assert n.path == "nul\\0name.jpg" and n.message == "gave up: \\0"
    [bad] = [f for f in rows.values() if f.path == "bad.jpg"]
    assert bad.message == "said \\0 and %D800"


def test_a_sidecar_with_nul_reads_as_jsonb_on_postgresql(ledger: Ledger) -> None:
    """PostgreSQL's `json` would keep `\\u0000`, which no `jsonb` cast nor `->>` takes."""
    record_files(ledger, [_new("a.jpg", sidecar={"t": "x\x00y", "\x00": "\udc80"})], now=NOW)
    with ledger.read() as s:
        if ledger.is_sqlite:
            value = s.scalar(text("SELECT json_extract(sidecar, '$.t') FROM files"))
        else:
            value = s.scalar(text("SELECT sidecar::jsonb ->> 't' FROM files"))
    assert value == "x\\0y"


def test_an_absent_sidecar_stays_as_it_was_stored_before() -> None:
    """The JSON type's own handling of None is kept (the decorator passes it through)."""
    assert storable_json(None) is None
    assert storable_json({"a": [1, None, "b"]}) == {"a": [1, None, "b"]}


# --- any str, any text column ---------------------------------------------------------

# Every text column written by the service (`file_counts` and `batch_counts` are written
# by triggers alone, from the `files` and `batches` columns of the same names, which are
# among these).
_TEXT_COLUMNS = [
    (table.name, column.name, column.type)
    for table in Base.metadata.sorted_tables
    if table.name not in {"file_counts", "batch_counts"}
    for column in table.columns
    if isinstance(column.type, BoundedString | SafeText)
]
_ANY_STR = st.text(st.characters(exclude_categories=()), max_size=400)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | _ANY_STR,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_ANY_STR, inner, max_size=4),
    max_leaves=12,
)


def _limit(kind: object) -> int | None:
    if isinstance(kind, BoundedString):
        return kind.length
    assert isinstance(kind, SafeText)
    return kind.limit


def test_every_text_column_is_covered() -> None:
    names = {f"{t}.{c}" for t, c, _ in _TEXT_COLUMNS}
    assert {"files.path", "files.message", "files.upload_request_id", "batches.last_error"} <= names
    plain = [
        f"{table.name}.{column.name}"
        for table in Base.metadata.sorted_tables
        for column in table.columns
        if column.type.python_type is str and not isinstance(column.type, BoundedString | SafeText)
    ]
    assert plain == [], "a text column without a storable type"


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    column=st.sampled_from(_TEXT_COLUMNS),
    value=_ANY_STR,
    sidecar=st.dictionaries(_ANY_STR, _JSON, max_size=4),
)
def test_any_str_into_any_text_column_is_storable(
    ledger: Ledger, column: tuple[str, str, object], value: str, sidecar: dict[str, object]
) -> None:
    table_name, column_name, kind = column
    ids = _one_row_each(ledger)
    table: Table = Base.metadata.tables[table_name]
    with ledger.write() as s:
        s.execute(update(table).where(table.c.id == ids[table_name]).values({column_name: value}))
        s.execute(update(File).where(File.id == ids["files"]).values(sidecar=sidecar))
    with ledger.read() as s:
        stored = s.scalar(select(table.c[column_name]).where(table.c.id == ids[table_name]))
        stored_sidecar = s.scalar(select(File.sidecar).where(File.id == ids["files"]))
    limit = _limit(kind)
    assert stored == storable(value, limit)
    if limit is not None:
        assert len(stored) <= limit
    if "\x00" not in value and (limit is None or len(value) <= limit):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            pass
        else:
            assert stored == value  # text that needs nothing is stored as it is
    assert stored_sidecar == storable_json(sidecar)


def _one_row_each(ledger: Ledger) -> dict[str, int]:
    """One batch and one file row to write into (made once per database)."""
    with ledger.read() as s:
        file_id = s.scalar(select(File.id).limit(1))
        batch_id = s.scalar(select(Batch.id).limit(1))
    if file_id is not None and batch_id is not None:
        return {"files": file_id, "batches": batch_id}
    [rec] = record_files(ledger, [_new("row.jpg")], now=NOW)
    return {"files": rec.file_id, "batches": create_batch(ledger, [rec.file_id], now=NOW)}


@pytest.mark.parametrize(
    ("value", "limit", "expected"),
    [
        ("plain", 16, "plain"),
        ("x" * 20, 16, "x" * 13 + "..."),
        ("a\x00b", None, "a\\0b"),
        ("caf\udce9", None, "caf%E9"),
        ("\ud800", None, "%D800"),
        ("é" * 10, 16, "é" * 10),
    ],
)
def test_storable(value: str, limit: int | None, expected: str) -> None:
    assert storable(value, limit) == expected
    assert storable(expected, limit) == expected  # twice changes nothing

"""record_uploaded: every row of a batch written in one statement, and an
original's image id handed to the duplicates recorded after it."""

from __future__ import annotations

from reka_ingest.core.states import FileState, Origin
from reka_ingest.ledger import Ledger
from reka_ingest.ledger.columns import storable
from reka_ingest.ledger.db import IN_CHUNK
from reka_ingest.ledger.intake import NewFile, record_files
from reka_ingest.ledger.queries import list_files
from reka_ingest.ledger.uploads import Uploaded, record_uploaded, set_final_path


def _new(name: str, sha: str) -> NewFile:
    return NewFile(
        path=name,
        source_root="/in",
        work_path=f"/work/{name}",
        origin=Origin.EVENT,
        size=10,
        mtime=1.0,
        sha256=sha,
        seen_at=5.0,
    )


def test_results_land_on_their_rows_and_duplicates_get_the_image_id(ledger: Ledger) -> None:
    first = record_files(ledger, [_new("a.jpg", "a" * 64), _new("b.jpg", "b" * 64)], now=10.0)
    copy = record_files(ledger, [_new("a-copy.jpg", "a" * 64)], now=11.0)
    assert copy[0].state == FileState.DUPLICATE
    results = [
        Uploaded(
            file_id=rec.file_id,
            image_id=f"img-{rec.file_id}",
            image_url=f"https://x/{rec.file_id}",
            indexing_status=1,
            upload_timestamp=20.0,
            state=FileState.INDEXING if i == 0 else FileState.INDEXED,
            next_poll_at=22.0 if i == 0 else None,
            poll_delay=2.0 if i == 0 else None,
        )
        for i, rec in enumerate(first)
    ]
    record_uploaded(ledger, results, request_id="req-1", now=20.0)
    rows = {f.path: f for f in list_files(ledger)}
    a, b, dup = rows["a.jpg"], rows["b.jpg"], rows["a-copy.jpg"]
    assert (a.state, a.image_id, a.next_poll_at, a.indexed_at) == (
        "indexing",
        a.image_id,
        22.0,
        None,
    )
    assert a.image_id == f"img-{a.id}" and a.upload_request_id == "req-1" and a.uploaded_at == 20.0
    assert (b.state, b.indexed_at, b.finished_at) == ("indexed", 20.0, 20.0)
    assert dup.state == "duplicate" and dup.duplicate_of == a.id
    assert (dup.image_id, dup.image_url) == (a.image_id, a.image_url)


def test_more_rows_than_one_statement_holds_each_get_their_own_values(ledger: Ledger) -> None:
    """Past IN_CHUNK rows the write takes several statements; every column lands on its
    own row (numbers and NULLs alike, on both databases), and foreign text is cleaned
    as any write cleans it."""
    n = IN_CHUNK + 7
    recorded = record_files(ledger, [_new(f"f{i}.jpg", f"{i:064x}") for i in range(n)], now=10.0)
    results = [
        Uploaded(
            file_id=rec.file_id,
            image_id=f"img-{i}",
            image_url=f"https://x/{i}\x00",  # a NUL the ledger never stores
            indexing_status=i % 3,
            upload_timestamp=20.0 + i,
            state=FileState.INDEXING if i % 2 else FileState.INDEXED,
            next_poll_at=30.0 + i if i % 2 else None,
            poll_delay=2.0 if i % 2 else None,
            conversion="HEIF -> JPEG" if i % 5 == 0 else None,
        )
        for i, rec in enumerate(recorded)
    ]
    record_uploaded(ledger, results, request_id="req-2", now=40.0)
    set_final_path(ledger, [(r.file_id, f"/done/{r.file_id}.jpg") for r in recorded], now=41.0)
    rows = {f.id: f for f in list_files(ledger)}
    assert len(rows) == n
    for i, rec in enumerate(recorded):
        row = rows[rec.file_id]
        indexing = bool(i % 2)
        assert row.image_id == f"img-{i}" and row.image_url == storable(f"https://x/{i}\x00")
        assert "\x00" not in row.image_url
        assert (row.indexing_status, row.upload_timestamp) == (i % 3, 20.0 + i)
        assert row.state == ("indexing" if indexing else "indexed")
        assert row.next_poll_at == (30.0 + i if indexing else None)
        assert row.poll_delay == (2.0 if indexing else None)
        assert row.indexed_at == (None if indexing else 40.0)
        assert row.finished_at == (None if indexing else 40.0)
        assert row.conversion == ("HEIF -> JPEG" if i % 5 == 0 else None)
        assert (row.upload_request_id, row.uploaded_at) == ("req-2", 40.0)
        assert (row.final_path, row.updated_at) == (f"/done/{rec.file_id}.jpg", 41.0)

"""record_uploaded: every row of a batch written in one statement, and an
original's image id handed to the duplicates recorded after it."""

from __future__ import annotations

from reka_ingest.core.states import FileState, Origin
from reka_ingest.ledger import Ledger
from reka_ingest.ledger.intake import NewFile, record_files
from reka_ingest.ledger.queries import list_files
from reka_ingest.ledger.uploads import Uploaded, record_uploaded


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

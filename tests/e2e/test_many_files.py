"""3,000 files in one folder, through the real service, all end indexed.

One flat folder is the case that hurts a naive watcher (one huge directory
listing per scan, one claim folder per file in work/); the batches are full
(100 images per request), and the shared budget is lifted (0 = unlimited).
3,000 files (30 full batches, a listing of thousands) prove what 10,000 did, in a
third of the time; how fast a far bigger burst goes in is the benchmark's
(`intake_ratio`, 100,000 files), not the suite's.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.images import image_bytes
from tests.support.service import Service

pytestmark = [pytest.mark.slow]

N = 3_000


@pytest.fixture
def service(tmp_path: Path, redis_url: str) -> Iterator[Service]:
    svc = Service(
        tmp_path,
        redis_url,
        env={
            "INGEST_UPLOADS_PER_DAY": "0",
            "INGEST_BATCH_MAX_FILES": "100",
            "INGEST_LOG_LEVEL": "WARNING",
        },
        standin_env={"STANDIN_INDEX_DELAY": "0.2"},
    )
    try:
        yield svc
    finally:
        svc.stop()


@pytest.mark.timeout(180)
def test_thousands_of_files_in_one_folder_all_end_indexed(service: Service) -> None:
    service.start()
    folder = service.inbox / "one folder"
    folder.mkdir()
    started = time.monotonic()
    for i in range(N):
        (folder / f"img-{i:05d}.jpg").write_bytes(image_bytes(i, size=(8, 8)))
    written = time.monotonic() - started

    counts = service.wait_terminal(N, timeout=150)
    assert counts["indexed"] == N, (counts, service.diagnose())
    stats = service.standin("/_standin/stats")
    assert stats["images_stored"] == N, stats
    rows = service.files()
    assert len({r.path for r in rows}) == N
    assert len({r.image_id for r in rows}) == N
    assert not any(folder.iterdir())
    print(f"wrote {N} files in {written:.1f} s; all indexed {time.monotonic() - started:.1f} s")

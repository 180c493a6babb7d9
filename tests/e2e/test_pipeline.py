"""The product end to end, with real processes: a bundled redis-server, the
stand-in Reka server, the watcher, a Celery worker and beat. Files are dropped
into the inbox the way people drop them, and the ledger must say what became
of every one."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.images import image_bytes
from tests.support.service import Service, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]


@pytest.fixture
def service(tmp_path: Path, redis_url: str, database_url: str) -> Iterator[Service]:
    svc = Service(
        tmp_path,
        redis_url,
        env={"INGEST_DATABASE_URL": database_url},
        standin_env={"STANDIN_INDEX_DELAY": "0.5"},
    )
    try:
        yield svc
    finally:
        svc.stop()


def write_slowly(path: Path, data: bytes, *, chunks: int, pause: float) -> threading.Thread:
    """Write `data` in `chunks` appends with `pause` seconds between them, in a thread."""

    def run() -> None:
        step = -(-len(data) // chunks)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as fh:
            for start in range(0, len(data), step):
                fh.write(data[start : start + step])
                fh.flush()
                os.fsync(fh.fileno())
                time.sleep(pause)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def remaining(inbox: Path) -> list[str]:
    return sorted(str(p.relative_to(inbox)) for p in inbox.rglob("*") if p.is_file())


def test_two_hundred_dropped_files_all_end_indexed(service: Service) -> None:
    service.start()
    inbox = service.inbox
    expected: dict[str, bytes] = {}
    sidecars: dict[str, dict[str, object]] = {}
    writers = []
    for i in range(200):
        fmt = "PNG" if i % 3 == 0 else "JPEG"
        folder = ("" if i % 4 == 0 else f"cams/site{i % 3}/") + ("" if i % 5 else "deep/er/")
        rel = f"{folder}img-{i:03d}.{'png' if fmt == 'PNG' else 'jpg'}"
        data = image_bytes(1000 + i, fmt=fmt, size=(96, 64))
        expected[rel] = data
        target = inbox / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if i % 7 == 0:
            meta: dict[str, object] = {
                "camera_id": f"cam-{i}",
                "recorded_timestamp_utc": 1_700_000_000 + i,
                "caption": f"frame {i}",
                "detection_metadata": [{"class_name": "car", "bounding_box": [1, 2, 3, 4]}],
            }
            sidecars[rel] = meta
            # Alternate the two sidecar names: NAME.EXT.json and NAME.json.
            side = target.with_name(target.name + ".json") if i % 2 else target.with_suffix(".json")
            side.write_text(json.dumps(meta))
        if i % 10 == 3:
            writers.append(write_slowly(target, data, chunks=5, pause=0.3))
        else:
            tmp = target.with_name(target.name + ".part")  # ignored until renamed
            tmp.write_bytes(data)
            tmp.rename(target)
    for w in writers:
        w.join()

    counts = service.wait_terminal(200, timeout=240)
    assert counts["indexed"] == 200, service.diagnose()

    rows = {r.path: r for r in service.files()}
    assert set(rows) == set(expected)
    assert len({r.image_id for r in rows.values()}) == 200
    for rel, data in expected.items():
        row = rows[rel]
        assert row.sha256 == hashlib.sha256(data).hexdigest(), rel
        assert row.image_id and row.image_url and row.indexing_status == 2
        assert row.indexed_at is not None and row.indexed_at >= row.seen_at
        received = service.standin(f"/_standin/images/{row.image_id}")
        assert received["sha256"] == row.sha256
        if rel in sidecars:
            for key, value in sidecars[rel].items():
                got = received["metadata"][key]
                if key == "detection_metadata":
                    assert got[0]["class_name"] == "car" and got[0]["bounding_box"] == [1, 2, 3, 4]
                else:
                    assert got == value, (rel, key)
    assert remaining(inbox) == []
    # Every upload request carried a full batch or what the wait let gather; none is lost.
    stats = service.standin("/_standin/stats")
    assert stats["images_stored"] == 200, stats


def test_files_already_there_are_taken_and_a_growing_file_goes_once_whole(
    service: Service,
) -> None:
    service.inbox.mkdir(parents=True)
    early = {f"early-{i}.jpg": image_bytes(5000 + i) for i in range(10)}
    for name, data in early.items():
        (service.inbox / name).write_bytes(data)
    service.start()

    big = image_bytes(6000, size=(640, 480))
    writer = write_slowly(service.inbox / "growing.jpg", big, chunks=14, pause=0.3)
    writer.join()  # about four seconds of appends

    counts = service.wait_terminal(11, timeout=180)
    assert counts["indexed"] == 11, service.diagnose()
    rows = {r.path: r for r in service.files()}
    assert set(rows) == {*early, "growing.jpg"}
    assert rows["growing.jpg"].sha256 == hashlib.sha256(big).hexdigest()
    received = service.standin(f"/_standin/images/{rows['growing.jpg'].image_id}")
    assert received["sha256"] == hashlib.sha256(big).hexdigest()
    assert received["size"] == len(big)
    stats = service.standin("/_standin/stats")
    assert stats["images_stored"] == 11, stats  # the growing file went up once
    wait_for(lambda: remaining(service.inbox) == [], 10, "the inbox to empty")

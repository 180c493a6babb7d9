"""Bad input, end to end, in ONE mixed drop through the real service (bundled
Redis, stand-in server, watcher, Celery worker and beat as processes): every
bad file ends `failed` with its own reason code and a NAME.error.json, and the
good files dropped beside them still end indexed.

The worker starts only after the watcher has recorded the drop, so that one
file can be deleted between its claim and its upload (`file_missing`). Cases a
real run cannot show are tested on their own: an unreadable file
(tests/worker/test_unreadable.py: the suite runs as root), and a crash between
recording a final file and moving it (tests/scheduler/test_bad_input.py).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from reka_ingest.ledger.schema import File
from tests.support.images import image_bytes
from tests.support.service import Service, wait_for

pytestmark = [pytest.mark.slow]

MAX_IMAGE_BYTES = 100_000
GOOD = [
    "plain.jpg",
    "with spaces in it.jpg",
    "ünïcødé 写真 ☃.png",
    "new\nline.jpg",
    "sub dir/ñandú/deep.jpg",
    "folder.jpg/inner.jpg",  # a folder named like an image: its files are taken
    "traversal.jpg",  # its sidecar is full of ../ and stays plain metadata
    "twin-a.jpg",  # and twin-b.jpg: the same bytes
]
FAILED = {
    "empty.jpg": "empty_file",
    "notanimage.jpg": "not_an_image",
    "truncated.jpg": "truncated_image",
    "big.jpg": "too_large",
    "icon.ico": "unsupported_format",
    "badjson.jpg": "bad_sidecar",
    "badtypes.jpg": "bad_sidecar",
    "linkedmeta.jpg": "bad_sidecar",  # its sidecar is a symlink to /etc/passwd
    "cam7/orphan.jpg.json": "orphan_sidecar",
    "deleted.jpg": "file_missing",
    "escape.jpg": "refused_path",  # a symlink to a file outside the inbox
    "forever.jpg": "never_stable",
}
TRAVERSAL_META = {
    "path": "../../etc/passwd",
    "caption": "../../../../../etc/shadow/../../" * 4,
    "camera_id": "../../var/../../root",
}


@pytest.fixture
def service(tmp_path: Path, redis_url: str, database_url: str) -> Iterator[Service]:
    svc = Service(
        tmp_path,
        redis_url,
        env={
            "INGEST_DATABASE_URL": database_url,
            "INGEST_MAX_IMAGE_BYTES": str(MAX_IMAGE_BYTES),
            "INGEST_SCAN_INTERVAL": "1.0",
            "INGEST_ORPHAN_SIDECAR_AFTER": "3",
            "INGEST_NEVER_STABLE_AFTER": "4",
            "INGEST_UPLOADS_PER_DAY": "0",
        },
        standin_env={"STANDIN_INDEX_DELAY": "0.3"},
    )
    try:
        yield svc
    finally:
        svc.stop()


def ico_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(buf, format="ICO")
    return buf.getvalue()


def drop(inbox: Path, outside: Path) -> dict[str, bytes]:
    """Write the mixed drop; returns the good files' bytes by path."""
    good: dict[str, bytes] = {}
    for i, rel in enumerate(GOOD):
        data = image_bytes(7000 + i, fmt="PNG" if rel.endswith(".png") else "JPEG")
        good[rel] = data
        (inbox / rel).parent.mkdir(parents=True, exist_ok=True)
        (inbox / rel).write_bytes(data)
    good["twin-b.jpg"] = good["twin-a.jpg"]  # the same bytes under a second name
    (inbox / "twin-b.jpg").write_bytes(good["twin-a.jpg"])
    (inbox / "traversal.jpg.json").write_text(json.dumps(TRAVERSAL_META))
    (inbox / "emptyfolder.png").mkdir()

    (inbox / "empty.jpg").write_bytes(b"")
    (inbox / "notanimage.jpg").write_text("hello, I am a text file with a .jpg name\n")
    whole = image_bytes(7100, size=(256, 256))
    (inbox / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    big = image_bytes(7101, size=(480, 360))
    assert len(big) > MAX_IMAGE_BYTES
    (inbox / "big.jpg").write_bytes(big)
    (inbox / "icon.ico").write_bytes(ico_bytes())
    (inbox / "badjson.jpg").write_bytes(image_bytes(7102))
    (inbox / "badjson.jpg.json").write_text('{"camera_id": "c1",')
    (inbox / "badtypes.jpg").write_bytes(image_bytes(7103))
    (inbox / "badtypes.jpg.json").write_text(json.dumps({"recorded_timestamp_utc": "noon"}))
    (inbox / "linkedmeta.jpg").write_bytes(image_bytes(7104))
    (inbox / "linkedmeta.jpg.json").symlink_to("/etc/passwd")
    (inbox / "cam7").mkdir()
    (inbox / "cam7" / "orphan.jpg.json").write_text(json.dumps({"caption": "lost"}))
    (inbox / "deleted.jpg").write_bytes(image_bytes(7105))
    outside.write_bytes(image_bytes(7106))
    (inbox / "escape.jpg").symlink_to(outside)
    return good


def keep_writing(path: Path, stop: threading.Event) -> threading.Thread:
    def run() -> None:
        with path.open("ab") as fh:
            while not stop.is_set():
                fh.write(os.urandom(64))
                fh.flush()
                time.sleep(0.05)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.timeout(180)
def test_a_mixed_drop_of_bad_input_fails_each_with_its_reason_and_disturbs_nothing(
    service: Service, tmp_path: Path
) -> None:
    passwd_before = hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest()
    svc = service
    svc.inbox.mkdir(parents=True)
    svc.data_dir.mkdir(parents=True)
    outside = tmp_path / "outside" / "secret.jpg"
    outside.parent.mkdir()
    stop = threading.Event()
    # The watcher, beat and the stand-in; the worker comes later (see the module doc).
    from reka_ingest.ledger import open_ledger  # noqa: PLC0415 - only to create the schema

    open_ledger(svc.settings().ingest.ledger_url).dispose()
    svc.start_standin(wait=False)
    svc.start_beat()
    svc.start_watcher()
    svc.wait_standin()  # the three start at once; the files go in after this
    try:
        good = drop(svc.inbox, outside)
        writer = keep_writing(svc.inbox / "forever.jpg", stop)
        total = len(good) + len(FAILED)

        def rows() -> dict[str, File]:
            return {r.path: r for r in svc.files()}

        wait_for(
            lambda: "deleted.jpg" in rows(), 30, "deleted.jpg recorded", on_timeout=svc.diagnose
        )
        deleted = rows()["deleted.jpg"]
        assert deleted.state == "queued"
        Path(deleted.work_path).unlink()  # gone between its claim and its upload
        svc.start_worker()
        wait_for(lambda: len(rows()) >= total, 60, f"{total} rows", on_timeout=svc.diagnose)
        stop.set()
        writer.join()
        counts = svc.wait_terminal(total, timeout=90)
    finally:
        stop.set()

    by_path = rows()
    assert set(by_path) == set(good) | set(FAILED), sorted(by_path)
    assert counts["failed"] == len(FAILED), counts
    for rel, reason in FAILED.items():
        row = by_path[rel]
        assert (row.state, row.reason) == ("failed", reason), (rel, row.message)
        assert row.message, rel
        error_file = svc.settings().ingest.failed_path / f"{rel}.error.json"
        record = json.loads(error_file.read_text())
        assert record["reason"] == reason and record["message"] == row.message, rel
        assert row.final_path == str(error_file), rel
    failed_dir = svc.settings().ingest.failed_path
    # Failed bytes sit beside their reason file (sidecars with them), ...
    for rel in ("empty.jpg", "notanimage.jpg", "truncated.jpg", "big.jpg", "icon.ico"):
        assert (failed_dir / rel).is_file(), rel
    assert json.loads((failed_dir / "cam7" / "orphan.jpg.json").read_text()) == {"caption": "lost"}
    assert (failed_dir / "badtypes.jpg.json").is_file()
    # ... the symlinked sidecar was moved as a link, never read, never followed ...
    assert "symbolic links are never followed" in (by_path["linkedmeta.jpg"].message or "")
    assert os.readlink(failed_dir / "linkedmeta.jpg.json") == "/etc/passwd"
    # ... and the symlink out of the inbox stays where it was, its target untouched.
    assert (svc.inbox / "escape.jpg").is_symlink()
    assert outside.read_bytes() == image_bytes(7106)
    assert "recorded_timestamp_utc" in (by_path["badtypes.jpg"].message or "")
    assert "INGEST_MAX_IMAGE_BYTES" in (by_path["big.jpg"].message or "")

    # The good files, beside all that: indexed, each uploaded once.
    twins = ["twin-a.jpg", "twin-b.jpg"]
    for rel in GOOD:
        if rel in twins:
            continue
        row = by_path[rel]
        assert row.state == "indexed", (rel, row.reason, row.message)
        assert row.sha256 == hashlib.sha256(good[rel]).hexdigest()
        received = svc.standin(f"/_standin/images/{row.image_id}")
        assert received["sha256"] == row.sha256
    # The same bytes under two names: whichever came first went up; the other is
    # its duplicate and carries its image_id.
    first, second = sorted((by_path[t] for t in twins), key=lambda r: r.id)
    assert first.state == "indexed", (first.path, first.message)
    assert (second.state, second.reason) == ("duplicate", "duplicate_content")
    assert second.duplicate_of == first.id
    assert second.image_id == first.image_id is not None
    assert svc.standin(f"/_standin/images/{first.image_id}")["sha256"] == first.sha256
    stats = svc.standin("/_standin/stats")
    assert stats["images_stored"] == len(GOOD), stats  # the twin went up once

    # A sidecar full of ../ is plain metadata: sent as it was, nothing read or written.
    sent = svc.standin(f"/_standin/images/{by_path['traversal.jpg'].image_id}")["metadata"]
    assert {k: sent[k] for k in TRAVERSAL_META} == TRAVERSAL_META
    assert hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest() == passwd_before
    done_dir = svc.settings().ingest.done_path
    for area in (done_dir, failed_dir):
        for p in area.rglob("*"):
            assert (
                area.resolve() in p.parent.resolve().parents or p.parent.resolve() == area.resolve()
            )
    assert (done_dir / "new\nline.jpg").is_file()
    assert (done_dir / "sub dir" / "ñandú" / "deep.jpg").is_file()

    # Left in the inbox: the refused link and the (now empty) folders.
    left = sorted(str(p.relative_to(svc.inbox)) for p in svc.inbox.rglob("*") if not p.is_dir())
    assert left == ["escape.jpg"]
    assert (svc.inbox / "emptyfolder.png").is_dir()
    assert "emptyfolder.png" not in by_path

"""More ways in, end to end through the real service (watcher, worker, beat, the
stand-in, a bundled redis-server, both ledgers): an image URL list whose good
URLs a local HTTP server serves, with a line that is not a URL, a URL given
twice and one nobody serves; and a `site/camera/day` tree with EXIF-dated JPEGs,
a HEIC, a sidecar that overrides the EXIF time and files the filters leave out.
Every row ends final, with the metadata the stand-in stored checked key by key."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from reka_ingest.core.states import FileState, Origin, Reason
from reka_ingest.files.heif import ensure_registered
from reka_ingest.ledger.schema import File
from tests.support.images import exif_jpeg_bytes, image_bytes
from tests.support.service import Service, wait_for
from tests.support.url_images import ImageServer, serve_images

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

# EXIF times carry no offset here: read in INGEST_EXIF_TIMEZONE.
ZONE = timezone(timedelta(hours=2))


def epoch(text: str) -> int:
    naive = datetime.strptime(text, "%Y:%m:%d %H:%M:%S")
    return int(naive.replace(tzinfo=ZONE).astimezone(UTC).timestamp())


@pytest.fixture
def images() -> Iterator[ImageServer]:
    with serve_images() as server:
        yield server


@pytest.fixture
def service(tmp_path: Path, redis_url: str, database_url: str) -> Iterator[Service]:
    svc = Service(
        tmp_path,
        redis_url,
        env={
            "INGEST_DATABASE_URL": database_url,
            "INGEST_PATH_METADATA": "{site_id}/{camera_id}/*",
            "INGEST_EXCLUDE": json.dumps(["*.thumb.jpg", "/private/**"]),
            "INGEST_EXIF_TIMEZONE": "+02:00",
        },
        standin_env={"STANDIN_INDEX_DELAY": "0.3"},
    )
    try:
        yield svc
    finally:
        svc.stop()


def stored(service: Service, row: File) -> dict[str, object]:
    """What the stand-in holds for the row's image."""
    assert row.image_id, (row.path, row.state, row.reason, row.message)
    detail: dict[str, object] = service.standin(f"/_standin/images/{row.image_id}")
    return detail


def test_a_url_list_and_a_camera_tree_end_with_their_metadata(
    service: Service, images: ImageServer
) -> None:
    a_url, a_bytes = images.put_image("shots/a.jpg", seed=11)
    b_url, b_bytes = images.put_image("shots/b.png", seed=12, fmt="PNG")
    missing_url = images.url("shots/missing.jpg")  # nobody serves it: a 404
    service.start()
    inbox = service.inbox

    # The camera tree first, the list beside it: site/camera/day, as cameras write.
    day = inbox / "lot-7" / "cam-3" / "2026-11-27"
    day.mkdir(parents=True)
    dated = exif_jpeg_bytes("2026:11:27 14:03:11", seed=21)
    overridden = exif_jpeg_bytes("2026:11:27 15:00:00", seed=22)
    ensure_registered()
    heic = image_bytes(23, fmt="HEIF")
    thumb = image_bytes(24)
    private = image_bytes(25)
    (day / "a.jpg").write_bytes(dated)
    (day / "b.HEIC").write_bytes(heic)
    (day / "c.thumb.jpg").write_bytes(thumb)
    other_day = inbox / "lot-7" / "cam-4" / "2026-11-28"
    other_day.mkdir(parents=True)
    (other_day / "d.jpg.json").write_text(json.dumps({"recorded_timestamp_utc": 1_700_000_000}))
    (other_day / "d.jpg").write_bytes(overridden)
    (inbox / "private").mkdir()
    (inbox / "private" / "x.jpg").write_bytes(private)
    listing = inbox / "lot-1" / "cam-url" / "feed" / "shots.urls.csv"
    listing.parent.mkdir(parents=True)
    part = listing.with_name(listing.name + ".part")
    part.write_text(
        "url,caption,camera_id\n"
        f"{a_url},first,\n"
        f"{b_url},second,cam-9\n"
        "ftp://files.example/c.jpg,third,\n"
        f"{a_url}#again,fourth,\n"
        f"{missing_url},fifth,\n"
    )
    part.rename(listing)

    # 5 URL rows, 3 files, 2 excluded rows (a file, and the private/ folder whole).
    counts = service.wait_terminal(10, timeout=200)
    rows = service.files()
    assert len(rows) == 10, service.diagnose()
    urls = {r.path: r for r in rows if r.origin == Origin.URL and "again" not in r.path}
    files = {r.path: r for r in rows if r.origin != Origin.URL}

    # The list: the good URLs indexed with the list's folder values under their cells.
    for url, data, extra in (
        (a_url, a_bytes, {"caption": "first", "camera_id": "cam-url"}),
        (b_url, b_bytes, {"caption": "second", "camera_id": "cam-9"}),
    ):
        row = urls[url]
        assert row.state == FileState.INDEXED, (row.state, row.reason, row.message)
        got = stored(service, row)
        assert got["source_url"] == url
        assert got["sha256"] == hashlib.sha256(data).hexdigest()
        assert got["metadata"] == {"site_id": "lot-1", **extra}
    bad = urls["ftp://files.example/c.jpg"]
    assert (bad.state, bad.reason) == (FileState.FAILED, Reason.BAD_URL)
    assert "line 4" in (bad.message or "")
    gone = urls[missing_url]
    assert (gone.state, gone.reason) == (FileState.FAILED, Reason.BAD_URL)
    assert "image_urls" in (gone.message or "")  # the API's own words, its param named
    [again] = [r for r in rows if "again" in r.path]
    assert (again.state, again.duplicate_of) == (FileState.DUPLICATE, urls[a_url].id)
    reason_file = next(service.settings().ingest.failed_path.rglob("shots.urls.csv.error.json"))
    record = json.loads(reason_file.read_text())
    assert [b["line"] for b in record["bad_lines"]] == [4]

    # The tree: folder values, EXIF time in the configured zone, the sidecar's time winning.
    a = files["lot-7/cam-3/2026-11-27/a.jpg"]
    assert a.state == FileState.INDEXED
    assert stored(service, a)["metadata"] == {
        "site_id": "lot-7",
        "camera_id": "cam-3",
        "recorded_timestamp_utc": epoch("2026:11:27 14:03:11"),
    }
    d = files["lot-7/cam-4/2026-11-28/d.jpg"]
    assert stored(service, d)["metadata"] == {
        "site_id": "lot-7",
        "camera_id": "cam-4",
        "recorded_timestamp_utc": 1_700_000_000,
    }
    b = files["lot-7/cam-3/2026-11-27/b.HEIC"]
    assert b.state == FileState.INDEXED
    assert b.conversion is not None and "JPEG" in b.conversion
    assert b.sha256 == hashlib.sha256(heic).hexdigest()  # the original's bytes
    got_b = stored(service, b)
    assert got_b["content_type"] == "image/jpeg" and got_b["filename"] == "b.jpg"
    assert got_b["metadata"] == {"site_id": "lot-7", "camera_id": "cam-3"}
    done = service.settings().ingest.done_path
    assert next(done.rglob("b.HEIC")).read_bytes() == heic

    # Left out: untouched where they were, and counted.
    assert (day / "c.thumb.jpg").read_bytes() == thumb
    assert (inbox / "private" / "x.jpg").read_bytes() == private
    excluded = {r.path: r for r in rows if r.state == FileState.EXCLUDED}
    assert set(excluded) == {"lot-7/cam-3/2026-11-27/c.thumb.jpg", "private/"}
    assert all(r.reason == Reason.EXCLUDED for r in excluded.values())
    assert counts["excluded"] == 2
    assert counts["indexed"] == 5 and counts["failed"] == 2 and counts["duplicate"] == 1
    wait_for(
        lambda: (
            sorted(str(p.relative_to(inbox)) for p in inbox.rglob("*") if p.is_file())
            == ["lot-7/cam-3/2026-11-27/c.thumb.jpg", "private/x.jpg"]
        ),
        20,
        "only the excluded files left in the inbox",
    )

"""`reka-ingest plan PATH`: a dry run that touches nothing and counts what would happen."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs
from typer.testing import CliRunner

from reka_ingest.cli.main import app
from reka_ingest.core.settings import IngestSettings
from reka_ingest.core.states import Origin, Reason
from reka_ingest.files.heif import ensure_registered
from reka_ingest.ledger import Ledger
from reka_ingest.ledger.intake import NewFile, record_files
from reka_ingest.ledger.schema import File
from scheduler.plan import PlanReport, UploadCount, plan
from tests.support.images import image_bytes, write_image


def make_tree(root: Path) -> dict[str, bytes]:
    """9 good images (one repeated, a PNG, a HEIC), 3 that would fail, 1 excluded, a URL list."""
    files: dict[str, bytes] = {}
    for i in range(6):
        rel = f"site-{i % 2}/cam/p{i}.jpg"
        write_image(root / rel, seed=700 + i)
        files[rel] = (root / rel).read_bytes()
    (root / "site-0" / "again.jpg").write_bytes(files["site-0/cam/p0.jpg"])  # within the plan
    (root / "site-1" / "logo.png").write_bytes(image_bytes(720, fmt="PNG"))
    ensure_registered()
    (root / "site-0" / "IMG_0001.HEIC").write_bytes(image_bytes(725, fmt="HEIF"))
    (root / "site-1" / "empty.jpg").write_bytes(b"")
    (root / "site-1" / "notes.jpg").write_bytes(b"not an image at all")
    write_image(root / "site-1" / "bad-meta.jpg", seed=730)
    (root / "site-1" / "bad-meta.jpg.json").write_text("{oops")
    write_image(root / "skip" / "x.jpg", seed=740)
    (root / "links.urls").write_text(
        "# product shots\n"
        "https://example.test/a.jpg\n"
        "https://EXAMPLE.test:443/b.jpg\n"
        "ftp://example.test/c.jpg\n"
        "https://example.test/a.jpg#again\n"
    )
    return files


def snapshot(root: Path) -> dict[str, tuple[int, float, bytes]]:
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            st = path.stat()
            out[str(path.relative_to(root))] = (st.st_size, st.st_mtime, path.read_bytes())
    return out


def test_a_tree_is_counted_by_outcome_and_nothing_is_touched(
    fast_settings: Callable[..., IngestSettings], ledger: Ledger, tmp_path: Path
) -> None:
    root = tmp_path / "archive"
    files = make_tree(root)
    uploaded = files["site-1/cam/p1.jpg"]
    record_files(
        ledger,
        [
            NewFile(
                path="earlier/p1.jpg",
                source_root="/elsewhere",
                work_path="/elsewhere/earlier/p1.jpg",
                origin=Origin.SCAN,
                size=len(uploaded),
                mtime=0.0,
                sha256=hashlib.sha256(uploaded).hexdigest(),
                seen_at=1.0,
            )
        ],
        now=1.0,
    )
    settings_ = fast_settings(batch_max_files=2, uploads_per_day=3, exclude=["/skip/**"])
    before = snapshot(root)
    with ledger.read() as s:
        rows_before = s.query(File).count()

    report = plan(settings_, ledger, root)

    assert snapshot(root) == before
    with ledger.read() as s:
        assert s.query(File).count() == rows_before
    assert report.files == 14
    assert report.excluded == 1
    assert report.manifests == 1 and report.url_lines == 4
    assert report.kinds["image/jpeg"] == 7 and report.kinds["image/png"] == 1
    assert report.kinds["image/heif"] == 1 and report.converted == 1
    assert report.duplicates_of_uploaded == 1  # p1.jpg's bytes are in the ledger
    assert report.duplicates_within == 2  # again.jpg, and a.jpg listed twice
    assert report.files_up.items == 7  # 5 JPEGs, the PNG and the HEIC
    assert report.files_up.bytes == sum(
        len(b) for rel, b in files.items() if rel != "site-1/cam/p1.jpg"
    ) + sum(len((root / rel).read_bytes()) for rel in ("site-1/logo.png", "site-0/IMG_0001.HEIC"))
    assert report.urls_up.items == 2
    assert dict(report.failures) == {
        Reason.EMPTY_FILE: 1,
        Reason.NOT_AN_IMAGE: 1,
        Reason.BAD_SIDECAR: 1,
        Reason.BAD_URL: 1,
    }
    assert report.examples[Reason.BAD_URL] == ["links.urls:4"]
    assert report.files_up.requests == 4 and report.urls_up.requests == 1  # 2 per request
    assert report.days_at_quota == pytest.approx(5 / 3)
    assert report.headline() == "9 images in 5 requests: 1.7 days at 3 requests a day"


def test_plan_of_one_url_list_without_a_ledger(
    fast_settings: Callable[..., IngestSettings], tmp_path: Path
) -> None:
    listing = tmp_path / "shots.urls"
    listing.write_text("".join(f"https://img.test/{i}.jpg\n" for i in range(250)))
    report = plan(fast_settings(uploads_per_day=0), None, listing)
    assert (report.files, report.url_lines, report.urls_up.items) == (1, 250, 250)
    assert report.urls_up.requests == 3  # 100 URLs a request
    assert report.days_at_quota is None
    assert (
        report.headline() == "250 images in 3 requests: no daily quota (INGEST_UPLOADS_PER_DAY=0)"
    )


def test_plan_of_a_url_csv_names_a_bad_cell_bad_sidecar(
    fast_settings: Callable[..., IngestSettings], tmp_path: Path
) -> None:
    """The plan fails a row the way the intake would: a bad cell is bad metadata."""
    listing = tmp_path / "cams.urls.csv"
    listing.write_text("url,index\nhttps://img.test/1.jpg,maybe\nnot a url,true\n")
    report = plan(fast_settings(), None, listing)
    assert report.examples[Reason.BAD_SIDECAR] == ["cams.urls.csv:2"]
    assert report.examples[Reason.BAD_URL] == ["cams.urls.csv:3"]


def test_the_command_prints_text_and_json(
    fast_settings: Callable[..., IngestSettings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings_ = fast_settings()
    for name, value in {
        "INGEST_DATA_DIR": settings_.data_dir,
        "INGEST_INBOX": settings_.inbox,
        "INGEST_DATABASE_URL": settings_.ledger_url,
        "INGEST_EXCLUDE": "/skip/**",
    }.items():
        monkeypatch.setenv(name, str(value))
    root = tmp_path / "archive"
    make_tree(root)
    with capture_logs():  # structlog's default (no CLI entry point here) prints to stdout
        text = CliRunner().invoke(app, ["plan", str(root)])
        as_json = CliRunner().invoke(app, ["plan", str(root), "--json"])
    assert text.exit_code == 0, text.output
    assert "nothing was claimed, recorded or uploaded" in text.output
    assert "bad_url" in text.output and "links.urls:4" in text.output
    assert text.output.rstrip().splitlines()[-1] == (
        "10 images in 2 requests: 29 minutes at 100 requests a day"
    )
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert data["would_upload"]["images"] == 8  # the ledger is empty: p1.jpg goes up too
    assert data["would_upload"]["converted_to_jpeg"] == 1
    assert data["would_upload"]["urls"] == 2
    assert data["excluded"] == 1
    assert data["would_fail"] == {
        "bad_sidecar": 1,
        "bad_url": 1,
        "empty_file": 1,
        "not_an_image": 1,
    }
    assert data["requests"] == {"images": 1, "urls": 1, "total": 2}
    assert data["quota"] == {"uploads_per_day": 100, "days": 0.02}
    assert data["headline"] == "10 images in 2 requests: 29 minutes at 100 requests a day"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    items=st.integers(0, 10_000),
    requests=st.integers(0, 10_000),
    per_day=st.integers(0, 100_000),
)
def test_the_headline_always_reads(items: int, requests: int, per_day: int) -> None:
    report = PlanReport(root="/r", uploads_per_day=per_day)
    report.files_up = UploadCount(items=items, requests=requests)
    line = report.headline()
    assert line.startswith(f"{items:,} images in {requests:,} requests: ")
    assert ("no daily quota" in line) == (per_day == 0)
    assert os.linesep not in line

"""`reka-ingest scan DIR`: an existing tree recorded in place, once."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reka_ingest.cli.main import app
from reka_ingest.core.settings import IngestSettings
from reka_ingest.core.states import FileState, Origin, Reason
from reka_ingest.ledger import Ledger, open_ledger
from reka_ingest.ledger.queries import list_files
from scheduler.backfill import backfill, count_files, refusal
from tests.scheduler.conftest import files_by_path
from tests.support.images import image_bytes, write_image


def make_tree(root: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for i in range(9):
        rel = f"y{i % 3}/m{i % 2}/p{i}.jpg"
        write_image(root / rel, seed=500 + i)
        files[rel] = (root / rel).read_bytes()
    (root / "y0" / "_defaults.json").write_text(json.dumps({"org_id": "acme"}))
    (root / "y0" / "m0" / "p0.jpg.json").write_text(json.dumps({"caption": "zero"}))
    (root / "y1" / "copy.jpg").write_bytes(files["y0/m0/p0.jpg"])  # a duplicate
    (root / "y2" / "bad.jpg").write_bytes(image_bytes(600))
    (root / "y2" / "bad.jpg.json").write_text("{oops")
    (root / ".trash").mkdir()
    (root / ".trash" / "gone.jpg").write_bytes(b"x")
    return files


def aged(settings: IngestSettings) -> IngestSettings:
    return settings.model_copy(update={"min_file_age": 0.0})


def test_backfill_records_in_place_and_a_rerun_records_nothing(
    fast_settings: Callable[..., IngestSettings], ledger: Ledger, tmp_path: Path
) -> None:
    settings = aged(fast_settings(batch_max_files=4))
    root = tmp_path / "archive"
    files = make_tree(root)
    before = sorted(p for p in root.rglob("*"))
    sent: list[int] = []
    progress: list[int] = []
    summary = backfill(settings, ledger, root, sent.append, progress=progress.append)
    assert summary.found == count_files(root) == 11
    assert sum(progress) == 11
    assert (summary.recorded, summary.queued, summary.duplicates, summary.failed) == (11, 9, 1, 1)
    assert summary.batches == len(sent) == 3  # 4 + 4 + 1
    assert sorted(p for p in root.rglob("*")) == before  # nothing moved, nothing added
    rows = files_by_path(ledger)
    # the walk's order decides which of two equal files is the original
    twins = sorted([rows["y0/m0/p0.jpg"], rows["y1/copy.jpg"]], key=lambda r: r.id)
    assert [t.state for t in twins] == [FileState.QUEUED, FileState.DUPLICATE]
    assert twins[1].duplicate_of == twins[0].id
    for rel, data in files.items():
        row = rows[rel]
        assert row.origin == "backfill"
        assert row.work_path == str((root / rel).resolve())
        assert row.source_root == str(root.resolve())
        assert row.sha256 == hashlib.sha256(data).hexdigest()
        assert row.batch_id in sent or row is twins[1]
    assert rows["y0/m0/p0.jpg"].sidecar == {"org_id": "acme", "caption": "zero"}
    assert rows["y0/m1/p3.jpg"].sidecar == {"org_id": "acme"}
    assert rows["y2/bad.jpg"].reason == Reason.BAD_SIDECAR
    assert (settings.failed_path / "y2" / "bad.jpg.error.json").exists()  # reason file only
    assert (root / "y2" / "bad.jpg").exists()

    again = backfill(settings, ledger, root, sent.append)
    assert (again.recorded, again.already_known, again.batches) == (0, 11, 0)
    assert len(files_by_path(ledger)) == 11


def test_backfill_skips_files_still_being_written(
    fast_settings: Callable[..., IngestSettings], ledger: Ledger, tmp_path: Path
) -> None:
    settings = fast_settings(min_file_age=60.0)
    write_image(tmp_path / "tree" / "fresh.jpg", seed=1)
    summary = backfill(settings, ledger, tmp_path / "tree", lambda _batch_id: None)
    assert (summary.recorded, summary.too_new) == (0, 1)


def test_backfill_refuses_the_services_own_folders(
    fast_settings: Callable[..., IngestSettings], tmp_path: Path
) -> None:
    settings = fast_settings()
    settings.work_dir.mkdir(parents=True)
    (settings.inbox / "sub").mkdir()
    assert "INGEST_INBOX" in (refusal(settings, settings.inbox) or "")
    assert "INGEST_INBOX" in (refusal(settings, settings.inbox / "sub") or "")
    assert "INGEST_DATA_DIR" in (refusal(settings, settings.work_dir) or "")
    assert "INGEST_INBOX" in (refusal(settings, tmp_path) or "")  # contains the inbox
    (tmp_path / "elsewhere").mkdir()
    assert refusal(settings, tmp_path / "elsewhere") is None


def test_the_scan_command_prints_a_summary(
    fast_settings: Callable[..., IngestSettings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = fast_settings(min_file_age=0.0)
    for name, value in {
        "INGEST_DATA_DIR": settings.data_dir,
        "INGEST_INBOX": settings.inbox,
        "INGEST_MIN_FILE_AGE": "0",
    }.items():
        monkeypatch.setenv(name, str(value))
    root = tmp_path / "archive"
    make_tree(root)
    result = CliRunner().invoke(app, ["scan", str(root), "--no-enqueue"])
    assert result.exit_code == 0, result.output
    assert "recorded:    11 (queued 9)" in result.output
    assert "duplicates:  1" in result.output
    assert "failed:      1" in result.output
    led = open_ledger(settings.ledger_url)
    try:
        assert len(files_by_path(led)) == 11
    finally:
        led.dispose()
    refused = CliRunner().invoke(app, ["scan", str(settings.inbox), "--no-enqueue"])
    assert refused.exit_code != 0


def test_a_path_too_long_to_index_fails_alone_and_a_rerun_records_it_once(
    fast_settings: Callable[..., IngestSettings], ledger: Ledger, tmp_path: Path
) -> None:
    """PostgreSQL refuses a btree entry past ~2,700 bytes and a POSIX path may be
    4,096: the file whose in-place path is too long to index fails alone with the
    reason, on both ledgers, and the files beside it are recorded as usual."""
    settings = aged(fast_settings())
    root = tmp_path / "archive"
    deep = root.joinpath(*["d" * 200 + f"{i:02d}" for i in range(14)])  # ~2,900 bytes
    write_image(deep / "deep.jpg", 1)
    write_image(root / "near.jpg", 2)
    summary = backfill(settings, ledger, root, lambda _batch: None)
    assert (summary.recorded, summary.queued, summary.failed) == (2, 1, 1)
    rows = files_by_path(ledger)
    far = rows[str((deep / "deep.jpg").relative_to(root))]
    assert far.reason == Reason.REFUSED_PATH
    assert "the ledger indexes paths of at most 2000 bytes" in (far.message or "")
    assert len(far.work_path.encode()) <= 2000
    assert rows["near.jpg"].state == FileState.QUEUED
    again = backfill(settings, ledger, root, lambda _batch: None)
    assert again.recorded == 0
    assert len(files_by_path(ledger)) == 2


def test_an_image_url_list_in_the_tree_is_read_where_it_lies(
    fast_settings: Callable[..., IngestSettings], ledger: Ledger, tmp_path: Path
) -> None:
    settings = aged(fast_settings())
    root = tmp_path / "archive"
    write_image(root / "a" / "p.jpg", seed=910)
    listing = root / "a" / "links.urls"
    listing.write_text("https://img.example/1.jpg\nnot a url\nhttps://img.example/1.jpg\n")
    sent: list[int] = []
    summary = backfill(settings, ledger, root, sent.append)
    assert summary.url_lists == 1
    rows = files_by_path(ledger)
    assert rows["a/p.jpg"].state == FileState.QUEUED
    urls = [f for f in list_files(ledger) if f.origin == Origin.URL]
    assert [f.state for f in urls] == [FileState.QUEUED, FileState.FAILED, FileState.DUPLICATE]
    assert urls[1].reason == Reason.BAD_URL
    assert urls[2].duplicate_of == urls[0].id
    assert listing.exists()  # never moved
    reason = json.loads(next(settings.failed_path.rglob("links.urls.error.json")).read_text())
    assert reason["bad_lines_total"] == 1
    assert len(sent) == 2  # the image's batch and the URL's, apart
    again = backfill(settings, ledger, root, sent.append)
    assert again.recorded == 0  # every line's row is known

"""Bad input at the watcher, in-process with a real ledger: a sidecar whose image
never comes, a file that never stops changing (the bound is a setting), and a
crash between recording a final file and moving it (finished at the next start)."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reka_ingest.core.settings import IngestSettings
from reka_ingest.core.states import FileState, Origin, Reason
from reka_ingest.ledger import Ledger
from reka_ingest.ledger.intake import NewFile, record_files
from scheduler.claim import ClaimFolders, claim, inbox_tag
from scheduler.watcher import Watcher
from tests.scheduler.conftest import files_by_path, wait_for
from tests.support.images import image_bytes, write_image


def no_enqueue(_batch_id: int) -> None:
    """Batches stay queued in the ledger; these tests look at intake only."""


@pytest.mark.timeout(60)
def test_a_sidecar_whose_image_never_comes_fails_alone_after_the_bound(
    fast_settings: Callable[..., IngestSettings], ledger: Ledger, running: Any
) -> None:
    settings = fast_settings(scan_interval=0.3, orphan_sidecar_after=1.5)
    inbox = settings.inbox
    watcher = Watcher(settings, ledger, no_enqueue)
    with running(watcher):
        (inbox / "cam").mkdir()
        (inbox / "cam" / "lonely.jpg.json").write_text(json.dumps({"caption": "no image"}))
        (inbox / "other.json").write_text("{}")
        # A sidecar whose image is still being written is not an orphan.
        write_image(inbox / "pair.jpg.part", seed=1)
        (inbox / "pair.jpg.json").write_text(json.dumps({"caption": "paired"}))
        started = time.monotonic()
        time.sleep(0.8)
        assert watcher.stats.orphan_sidecars == 0  # not before the bound
        (inbox / "pair.jpg.part").rename(inbox / "pair.jpg")
        wait_for(lambda: watcher.stats.orphan_sidecars >= 2)
        waited = time.monotonic() - started
        wait_for(lambda: watcher.recorder.totals.recorded >= 3)
        time.sleep(1.0)  # no other file is failed as an orphan
    assert waited >= 1.5
    rows = files_by_path(ledger)
    lonely = rows["cam/lonely.jpg.json"]
    assert (lonely.state, lonely.reason) == (FileState.FAILED, Reason.ORPHAN_SIDECAR)
    assert "INGEST_ORPHAN_SIDECAR_AFTER" in (lonely.message or "")
    assert rows["other.json"].reason == Reason.ORPHAN_SIDECAR
    failed = settings.failed_path
    assert json.loads((failed / "cam" / "lonely.jpg.json").read_text()) == {"caption": "no image"}
    record = json.loads((failed / "cam" / "lonely.jpg.json.error.json").read_text())
    assert record["reason"] == "orphan_sidecar"
    assert lonely.final_path == str(failed / "cam" / "lonely.jpg.json.error.json")
    # The pair went as one: the image queued with its metadata, the sidecar with it.
    pair = rows["pair.jpg"]
    assert pair.state == FileState.QUEUED and pair.sidecar == {"caption": "paired"}
    assert "pair.jpg.json" not in rows
    assert watcher.stats.orphan_sidecars == 2
    assert sorted(p.name for p in inbox.rglob("*") if p.is_file()) == []


@pytest.mark.timeout(60)
def test_the_never_stable_bound_is_the_setting(
    fast_settings: Callable[..., IngestSettings], ledger: Ledger, running: Any
) -> None:
    settings = fast_settings(never_stable_after=1.5)
    assert settings.never_stable_after == 1.5
    target = settings.inbox / "forever.jpg"
    watcher = Watcher(settings, ledger, no_enqueue)  # no give_up_after: the setting rules
    assert watcher.tracker.give_up_after == 1.5
    stop = threading.Event()

    def keep_writing() -> None:
        with target.open("ab") as fh:
            while not stop.is_set():
                fh.write(b"x" * 100)
                fh.flush()
                time.sleep(0.05)

    writer = threading.Thread(target=keep_writing)
    with running(watcher):
        writer.start()
        try:
            wait_for(lambda: watcher.recorder.totals.failed >= 1)
        finally:
            stop.set()
            writer.join()
    row = files_by_path(ledger)["forever.jpg"]
    assert (row.state, row.reason) == (FileState.FAILED, Reason.NEVER_STABLE)
    assert row.sha256 is None  # never hashed: it was never whole
    assert (settings.failed_path / "forever.jpg.error.json").exists()


def test_never_stable_and_orphan_bounds_are_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from reka_ingest.core.settings import load_settings  # noqa: PLC0415 - after the env is set

    monkeypatch.setenv("INGEST_NEVER_STABLE_AFTER", "7")
    monkeypatch.setenv("INGEST_ORPHAN_SIDECAR_AFTER", "9.5")
    ingest = load_settings().ingest
    assert (ingest.never_stable_after, ingest.orphan_sidecar_after) == (7.0, 9.5)
    monkeypatch.setenv("INGEST_ORPHAN_SIDECAR_AFTER", "0")
    with pytest.raises(Exception, match="INGEST_ORPHAN_SIDECAR_AFTER"):
        load_settings()


def _claimed_row(
    settings: IngestSettings, ledger: Ledger, name: str, data: bytes, **extra: Any
) -> NewFile:
    """A file claimed into work/ and recorded final, as a watcher that then died left it."""
    src = settings.inbox / name
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(data)
    folders = ClaimFolders(str(settings.work_dir.resolve()), inbox_tag(str(settings.inbox)))
    claimed = claim(str(src), rel_path=name, folders=folders)
    assert claimed is not None
    return NewFile(
        path=name,
        source_root=str(settings.inbox.resolve()),
        work_path=claimed.work_path,
        origin=Origin.EVENT,
        size=len(data),
        mtime=0.0,
        seen_at=time.time(),
        **{"sha256": None, **extra},
    )


@pytest.mark.timeout(60)
def test_a_crash_between_recording_a_final_file_and_moving_it_is_finished_at_start(
    fast_settings: Callable[..., IngestSettings], ledger: Ledger, running: Any
) -> None:
    settings = fast_settings()
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    good = image_bytes(11)
    original = _claimed_row(settings, ledger, "a/first.jpg", good, sha256="1" * 64)
    copy = _claimed_row(settings, ledger, "b/copy.jpg", good, sha256="1" * 64)
    bad = _claimed_row(
        settings,
        ledger,
        "c/empty.jpg",
        b"",
        reason=Reason.EMPTY_FILE,
        message="the file is empty (0 bytes)",
    )
    recorded = record_files(ledger, [original, copy, bad], now=time.time())
    # The crash: rows written, nothing moved (final_path null, bytes in work/).
    assert [r.state for r in recorded] == [FileState.QUEUED, FileState.DUPLICATE, FileState.FAILED]
    assert Path(copy.work_path).exists() and Path(bad.work_path).exists()

    watcher = Watcher(settings, ledger, no_enqueue)
    with running(watcher):
        pass
    assert watcher.stats.moves_finished == 2
    rows = files_by_path(ledger)
    assert rows["b/copy.jpg"].final_path == str(settings.done_path / "b" / "copy.jpg")
    assert (settings.done_path / "b" / "copy.jpg").read_bytes() == good
    error_file = settings.failed_path / "c" / "empty.jpg.error.json"
    assert rows["c/empty.jpg"].final_path == str(error_file)
    assert json.loads(error_file.read_text())["reason"] == "empty_file"
    assert (settings.failed_path / "c" / "empty.jpg").exists()
    # The queued original stays where a worker will read it; no claim folder is left behind.
    assert Path(original.work_path).exists()
    assert sorted(os.listdir(settings.work_dir)) == [Path(original.work_path).parent.name]
    # A second start finds nothing more to do.
    again = Watcher(settings, ledger, no_enqueue)
    with running(again):
        pass
    assert again.stats.moves_finished == 0


@pytest.mark.timeout(120)
def test_a_leftover_is_moved_at_start_however_many_rows_have_their_bytes_gone(
    fast_settings: Callable[..., IngestSettings], ledger: Ledger, running: Any
) -> None:
    """Uploaded rows whose bytes went away (INGEST_AFTER_UPLOAD=delete: every one)
    keep no final path; twelve thousand of them, older than a file a crash left
    unmoved, must not hide it: the start looks at what is in work/, not at them."""
    settings = fast_settings()
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    folder = ClaimFolders(str(settings.work_dir.resolve()), inbox_tag(str(settings.inbox)))
    claim_dir = os.path.join(folder.work_dir, f"{folder.tag}-gone")
    gone = [
        NewFile(
            path=f"gone/{i}.jpg",
            source_root=str(settings.inbox.resolve()),
            work_path=os.path.join(claim_dir, f"{i}.jpg"),  # its bytes deleted after upload
            origin=Origin.EVENT,
            size=1,
            mtime=0.0,
            seen_at=1.0,
            sha256=f"{i:064x}",
            reason=Reason.EMPTY_FILE,  # settled at once, as an uploaded row is
            message="settled",
        )
        for i in range(12_000)
    ]
    record_files(ledger, gone, now=1.0)
    bad = _claimed_row(settings, ledger, "late/empty.jpg", b"", reason=Reason.EMPTY_FILE)
    record_files(ledger, [bad], now=2.0)  # the crash: recorded, never moved

    watcher = Watcher(settings, ledger, no_enqueue)
    with running(watcher):
        pass
    assert watcher.stats.moves_finished == 1
    assert files_by_path(ledger)["late/empty.jpg"].final_path == str(
        settings.failed_path / "late" / "empty.jpg.error.json"
    )
    assert (settings.failed_path / "late" / "empty.jpg").exists()

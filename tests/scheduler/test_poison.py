"""Poison files at the watcher, in-process with a real ledger: each case the issue
names fails alone (or is taken), never stops its group, its folder, the watcher
or the next start.

Case by case: a sidecar nested 100,000 deep (own and `_defaults.json`), names
that are not UTF-8 (file and folder), 255-byte names whose derived names would
not fit, a leftover of each in work/ at start, a row the ledger refuses (the
group is split until it stands alone), a sidecar written after its image (paired
within INGEST_SIDECAR_WAIT; failed with the truth after), and the inbox deleted
and made again while running.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reka_ingest.core.errors import LedgerUnavailable
from reka_ingest.core.settings import IngestSettings
from reka_ingest.core.states import FileState, Origin, Reason
from reka_ingest.files.names import NAME_MAX
from reka_ingest.ledger import Ledger, db, open_ledger
from reka_ingest.ledger.intake import NewFile
from reka_ingest.ledger.queries import list_files
from scheduler.backfill import backfill
from scheduler.batcher import Batcher, BatchLimits
from scheduler.claim import claim_folder_name, inbox_tag
from scheduler.recorder import Recorder
from scheduler.watcher import Watcher
from tests.scheduler.conftest import files_by_path, wait_for
from tests.support.images import image_bytes, write_image

DEEP = "[" * 100_000


def no_enqueue(_batch_id: int) -> None:
    """Batches stay queued in the ledger; these tests look at intake only."""


def _bytes_path(folder: Path, name: bytes) -> bytes:
    return os.path.join(os.fsencode(folder), name)


def _write(path: bytes, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)


def _work_files(settings: IngestSettings) -> list[str]:
    """Names of the files left in the work area."""
    return [p.name for p in Path(settings.work_dir).rglob("*") if p.is_file()]


def _recorder(settings: IngestSettings, ledger: Ledger) -> Recorder:
    """A recorder whose batches stay in the ledger (these tests look at recording)."""
    batcher = Batcher(BatchLimits.from_settings(settings), create=lambda ids: 0, enqueue=no_enqueue)
    return Recorder(settings, ledger, batcher, group_size=1000)


def _new_file(
    settings: IngestSettings, work_path: Path, i: int, sidecar: dict[str, object] | None = None
) -> NewFile:
    """File `i` as the watcher would hand it to the recorder (its hash made up)."""
    return NewFile(
        path=f"{i}.jpg",
        source_root=str(settings.inbox),
        work_path=str(work_path),
        origin=Origin.SCAN,
        size=10,
        mtime=0.0,
        sha256=f"{i:064x}",
        seen_at=time.time(),
        sidecar=sidecar,
    )


def _assert_names_fit(folder: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(os.fsencode(folder)):
        for name in dirnames + filenames:
            assert len(name) <= NAME_MAX, (dirpath, name)


@pytest.mark.timeout(60)
def test_a_deeply_nested_sidecar_fails_its_image_alone_and_the_next_start_is_clean(
    fast_settings: Callable[..., IngestSettings], ledger: Ledger, running: Any
) -> None:
    settings = fast_settings()
    inbox = settings.inbox
    write_image(inbox / "deep.jpg", seed=1)
    (inbox / "deep.jpg.json").write_text(DEEP)
    (inbox / "deepdefaults").mkdir()
    (inbox / "deepdefaults" / "_defaults.json").write_text(DEEP)
    write_image(inbox / "deepdefaults" / "under.jpg", seed=2)
    write_image(inbox / "good.jpg", seed=3)
    watcher = Watcher(settings, ledger, no_enqueue)
    with running(watcher):
        wait_for(lambda: len(list_files(ledger)) >= 3)
        write_image(inbox / "later.jpg", seed=4)  # intake goes on
        wait_for(lambda: "later.jpg" in files_by_path(ledger))
        assert watcher._thread is not None and watcher._thread.is_alive()
    rows = files_by_path(ledger)
    for path in ("deep.jpg", "deepdefaults/under.jpg"):
        assert (rows[path].state, rows[path].reason) == (FileState.FAILED, Reason.BAD_SIDECAR)
        assert "100000 deep" in (rows[path].message or "")
    assert rows["good.jpg"].state == FileState.QUEUED
    assert rows["later.jpg"].state == FileState.QUEUED
    assert (settings.failed_path / "deep.jpg.error.json").is_file()
    assert not [p for p in _work_files(settings) if "deep" in p]

    # A crash had left the same poison claimed with no row: the next start records it.
    tag = inbox_tag(str(inbox))
    leftover = settings.work_dir / claim_folder_name(tag, "")
    leftover.mkdir()
    (leftover / "again.jpg").write_bytes(image_bytes(5))
    (leftover / "again.jpg.json").write_text(DEEP)
    second = Watcher(settings, ledger, no_enqueue)
    with running(second):
        assert second.stats.recovered == 1
    again = files_by_path(ledger)["again.jpg"]
    assert (again.state, again.reason) == (FileState.FAILED, Reason.BAD_SIDECAR)
    assert not leftover.exists() or not any(leftover.iterdir())


@pytest.mark.timeout(60)
def test_names_that_are_not_utf8_are_taken_and_shown_by_the_percent_rule(
    fast_settings: Callable[..., IngestSettings], ledger: Ledger, running: Any
) -> None:
    settings = fast_settings()
    inbox = settings.inbox
    _write(_bytes_path(inbox, b"caf\xe9.jpg"), image_bytes(1))
    _write(_bytes_path(inbox, b"d\xf6ssier/inner.jpg"), image_bytes(2))
    _write(_bytes_path(inbox, b"d\xf6ssier/bad\xff\xfe.jpg"), b"")  # empty: fails, with its name
    _write(_bytes_path(inbox, b"caf%E9.jpg"), image_bytes(3))  # a literal look-alike
    watcher = Watcher(settings, ledger, no_enqueue)
    with running(watcher):
        wait_for(lambda: len(list_files(ledger)) >= 4)
        write_image(inbox / "after" / "plain.jpg", seed=4)
        wait_for(lambda: "after/plain.jpg" in files_by_path(ledger))
    rows = files_by_path(ledger)
    assert rows["caf%E9.jpg"].state == FileState.QUEUED
    assert rows["d%F6ssier/inner.jpg"].state == FileState.QUEUED
    bad = rows["d%F6ssier/bad%FF%FE.jpg"]
    assert (bad.state, bad.reason) == (FileState.FAILED, Reason.EMPTY_FILE)
    reason_file = settings.failed_path / "d%F6ssier" / "bad%FF%FE.jpg.error.json"
    record = json.loads(reason_file.read_text())
    assert record["path"] == "d%F6ssier/bad%FF%FE.jpg"
    # Both "caf%E9.jpg" files are on record; the claimed bytes sit under plain names.
    assert len([r for r in list_files(ledger) if r.path == "caf%E9.jpg"]) == 2
    for row in list_files(ledger):
        row.work_path.encode("utf-8")  # every stored work path is text
        if row.state == FileState.QUEUED:
            assert os.path.isfile(row.work_path)

    # The next start with a raw-named leftover in work/ (an older version's claim).
    tag = inbox_tag(str(inbox))
    leftover = os.path.join(os.fsencode(settings.work_dir), os.fsencode(claim_folder_name(tag, "")))
    _write(os.path.join(leftover, b"left\xe9.jpg"), image_bytes(6))
    second = Watcher(settings, ledger, no_enqueue)
    with running(second):
        assert second.stats.recovered == 1
    row = files_by_path(ledger)["left%E9.jpg"]
    assert row.state == FileState.QUEUED and os.path.isfile(row.work_path)


@pytest.mark.timeout(60)
def test_255_byte_names_never_produce_a_name_that_cannot_exist(
    fast_settings: Callable[..., IngestSettings], ledger: Ledger, running: Any
) -> None:
    settings = fast_settings()
    inbox = settings.inbox
    long_stem = "x" * (NAME_MAX - len(".jpg"))
    (inbox / f"{long_stem}.jpg").write_bytes(b"")  # fails: NAME.error.json would be 266 bytes
    (inbox / "sub").mkdir()
    (inbox / "sub" / f"{long_stem}.jpg").write_bytes(b"")
    raw = "é" * 127 + ".j"  # 256 bytes would not exist; 127 two-byte chars + ".j" = 256
    raw = raw[:-1]  # 255 bytes
    (inbox / raw).write_bytes(image_bytes(1))
    write_image(inbox / "good.jpg", seed=2)
    watcher = Watcher(settings, ledger, no_enqueue)
    with running(watcher):
        wait_for(lambda: len(list_files(ledger)) >= 4)
    rows = files_by_path(ledger)
    top = rows[f"{long_stem}.jpg"]
    assert (top.state, top.reason) == (FileState.FAILED, Reason.EMPTY_FILE)
    assert top.final_path is not None and os.path.isfile(top.final_path)
    assert json.loads(Path(top.final_path).read_text())["path"] == f"{long_stem}.jpg"
    assert rows[f"sub/{long_stem}.jpg"].final_path is not None
    assert rows[raw].state == FileState.QUEUED
    assert rows["good.jpg"].state == FileState.QUEUED
    _assert_names_fit(settings.data_dir)
    assert not [p for p in _work_files(settings) if long_stem in p]

    # The same long name failing again: the collision name still fits.
    (inbox / f"{long_stem}.jpg").write_bytes(b"")
    second = Watcher(settings, ledger, no_enqueue)
    with running(second):
        wait_for(lambda: len(list_files(ledger)) >= 5)
    finals = [r.final_path for r in list_files(ledger) if r.path == f"{long_stem}.jpg"]
    assert len(finals) == 2 and len(set(finals)) == 2
    _assert_names_fit(settings.data_dir)


def test_a_row_the_ledger_refuses_fails_alone_and_the_rest_of_its_group_is_recorded(
    fast_settings: Callable[..., IngestSettings], ledger: Ledger
) -> None:
    settings = fast_settings()
    recorder = _recorder(settings, ledger)
    work = settings.work_dir / "t"
    work.mkdir(parents=True)
    for i in range(9):
        (work / f"{i}.jpg").write_bytes(image_bytes(i))
        # A value JSON cannot hold: this row's INSERT fails, and its group's.
        sidecar: dict[str, object] | None = {"caption": {1, 2}} if i == 6 else None
        recorder.add(_new_file(settings, work / f"{i}.jpg", i, sidecar))
    counts = recorder.flush()
    assert (counts.recorded, counts.queued, counts.failed, counts.isolated) == (9, 8, 1, 1)
    rows = files_by_path(ledger)
    poison = rows["6.jpg"]
    assert (poison.state, poison.reason) == (FileState.FAILED, Reason.INTAKE_FAILED)
    assert "TypeError" in (poison.message or "")
    assert poison.final_path is not None and os.path.isfile(poison.final_path)
    assert all(rows[f"{i}.jpg"].state == FileState.QUEUED for i in range(9) if i != 6)


@pytest.mark.timeout(60)
def test_a_sidecar_written_seconds_after_its_image_is_paired(
    fast_settings: Callable[..., IngestSettings], ledger: Ledger, running: Any
) -> None:
    settings = fast_settings(sidecar_wait=5.0)
    inbox = settings.inbox
    watcher = Watcher(settings, ledger, no_enqueue)
    with running(watcher):
        write_image(inbox / "cam" / "slow.jpg", seed=1)
        time.sleep(3.0)  # the writer's gap between the image and its metadata
        (inbox / "cam" / "slow.jpg.json").write_text(json.dumps({"caption": "3 s later"}))
        wait_for(lambda: "cam/slow.jpg" in files_by_path(ledger))
    row = files_by_path(ledger)["cam/slow.jpg"]
    assert row.state == FileState.QUEUED
    assert row.sidecar == {"caption": "3 s later"}
    assert watcher.stats.sidecar_waits >= 1


@pytest.mark.timeout(60)
def test_a_sidecar_that_comes_after_its_image_was_taken_fails_with_the_truth(
    fast_settings: Callable[..., IngestSettings], ledger: Ledger, running: Any
) -> None:
    settings = fast_settings(sidecar_wait=0.3, scan_interval=0.5)
    inbox = settings.inbox
    watcher = Watcher(settings, ledger, no_enqueue)
    with running(watcher):
        write_image(inbox / "fast.jpg", seed=1)
        wait_for(lambda: "fast.jpg" in files_by_path(ledger))
        (inbox / "fast.jpg.json").write_text(json.dumps({"caption": "too late"}))
        wait_for(lambda: "fast.jpg.json" in files_by_path(ledger))
    rows = files_by_path(ledger)
    image, late = rows["fast.jpg"], rows["fast.jpg.json"]
    assert image.sidecar is None
    assert (late.state, late.reason) == (FileState.FAILED, Reason.LATE_SIDECAR)
    message = late.message or ""
    assert "fast.jpg" in message and f"file {image.id}" in message
    assert "not uploaded yet" in message and "INGEST_SIDECAR_WAIT" in message
    assert "no image arrived" not in message
    assert (settings.failed_path / "fast.jpg.json").is_file()
    assert watcher.stats.orphan_sidecars == 0


@pytest.mark.timeout(60)
def test_a_sidecar_name_on_a_fifo_or_socket_fails_at_once_as_no_file_and_the_image_goes(
    fast_settings: Callable[..., IngestSettings], ledger: Ledger, running: Any
) -> None:
    settings = fast_settings(sidecar_wait=0.3, scan_interval=0.5, orphan_sidecar_after=3600)
    inbox = settings.inbox
    os.mkfifo(inbox / "pipe.jpg.json")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(inbox / "sock.json"))
    write_image(inbox / "pipe.jpg", seed=1)
    watcher = Watcher(settings, ledger, no_enqueue)
    try:
        with running(watcher):
            wanted = {"pipe.jpg", "pipe.jpg.json", "sock.json"}
            wait_for(lambda: wanted <= set(files_by_path(ledger)))
    finally:
        sock.close()
    rows = files_by_path(ledger)
    assert (rows["pipe.jpg"].state, rows["pipe.jpg"].sidecar) == (FileState.QUEUED, None)
    for name in ("pipe.jpg.json", "sock.json"):
        row = rows[name]
        assert (row.state, row.reason) == (FileState.FAILED, Reason.REFUSED_PATH), name
        assert "not a regular file" in (row.message or ""), name
        assert (inbox / name).exists()  # recorded in place, never opened
    assert watcher.stats.late_sidecars == 0 and watcher.stats.orphan_sidecars == 0


@pytest.mark.timeout(60)
def test_the_inbox_deleted_and_made_again_is_noticed_and_watched_again(
    fast_settings: Callable[..., IngestSettings], ledger: Ledger, running: Any
) -> None:
    settings = fast_settings()  # scans every 600 s: only events can find the new file
    inbox = settings.inbox
    watcher = Watcher(settings, ledger, no_enqueue)
    with running(watcher):
        shutil.rmtree(inbox)
        wait_for(lambda: watcher._inbox_gone_since is not None, timeout=5)
        inbox.mkdir()
        wait_for(lambda: watcher.stats.inbox_returns >= 1, timeout=5)
        time.sleep(0.3)
        write_image(inbox / "back.jpg", seed=1)
        wait_for(lambda: "back.jpg" in files_by_path(ledger), timeout=10)
        assert watcher._thread is not None and watcher._thread.is_alive()


def test_a_backfill_refuses_a_name_that_is_not_utf8_on_record_and_takes_the_rest(
    fast_settings: Callable[..., IngestSettings], ledger: Ledger, tmp_path: Path
) -> None:
    settings = fast_settings(min_file_age=0.0)
    root = tmp_path / "archive"
    _write(_bytes_path(root, b"f\xfcr.jpg"), image_bytes(1))
    _write(_bytes_path(root, b"ok/\xff/deep.jpg"), image_bytes(2))
    write_image(root / "fine.jpg", seed=3)
    summary = backfill(settings, ledger, root, no_enqueue)
    assert (summary.recorded, summary.queued, summary.failed) == (3, 1, 2)
    rows = files_by_path(ledger)
    for rel in ("f%FCr.jpg", "ok/%FF/deep.jpg"):
        assert (rows[rel].state, rows[rel].reason) == (FileState.FAILED, Reason.REFUSED_PATH)
        assert "not UTF-8" in (rows[rel].message or "")
    assert rows["fine.jpg"].state == FileState.QUEUED
    assert os.path.exists(_bytes_path(root, b"f\xfcr.jpg"))  # in place: never moved
    assert backfill(settings, ledger, root, no_enqueue).recorded == 0  # a rerun adds nothing


@pytest.mark.timeout(60)
def test_a_file_dated_in_the_future_is_taken_without_waiting_for_that_date(
    fast_settings: Callable[..., IngestSettings], ledger: Ledger, running: Any
) -> None:
    settings = fast_settings(sidecar_wait=1.0)
    future = time.time() + 10 * 365 * 86400
    write_image(settings.inbox / "future.jpg", seed=1)
    os.utime(settings.inbox / "future.jpg", (future, future))
    watcher = Watcher(settings, ledger, no_enqueue)
    with running(watcher):
        wait_for(lambda: "future.jpg" in files_by_path(ledger), timeout=10)
    assert files_by_path(ledger)["future.jpg"].state == FileState.QUEUED


def test_a_ledger_that_does_not_answer_keeps_the_group_and_splits_nothing(
    fast_settings: Callable[..., IngestSettings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A locked database is an outage, not poison: no file is failed for it, the
    group waits, and the next flush records every file."""
    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 200)  # a short wait for the lock
    path = tmp_path / "locked.db"
    ledger = open_ledger(f"sqlite:///{path}")
    settings = fast_settings()
    recorder = _recorder(settings, ledger)
    for i in range(6):
        recorder.add(_new_file(settings, tmp_path / f"{i}.jpg", i))
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process holding the write lock
    try:
        with pytest.raises(LedgerUnavailable):
            recorder.flush()
        assert len(recorder) == 6
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    counts = recorder.flush()
    assert (counts.recorded, counts.queued, counts.failed, counts.isolated) == (6, 6, 0, 0)
    assert all(r.state == FileState.QUEUED for r in list_files(ledger))
    ledger.dispose()


def _deeper_than_path_max(root: Path) -> bytes:
    """Folders under `root` whose path passes PATH_MAX (made through directory
    descriptors, as no path names them), an image at the bottom; the bottom path."""
    fd = os.open(root, os.O_RDONLY)
    parts = [os.fsencode(root)]
    try:
        while len(b"/".join(parts)) <= os.pathconf(root, "PC_PATH_MAX"):
            name = f"{len(parts):02d}".encode() + b"d" * 200
            os.mkdir(name, dir_fd=fd)
            below = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = below
            parts.append(name)
        image = os.open("deep.jpg", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(image, image_bytes(9))
        os.close(image)
    finally:
        os.close(fd)
    return b"/".join(parts)


@pytest.mark.timeout(60)
def test_a_folder_deeper_than_path_max_fails_alone_saying_to_shorten_its_path(
    fast_settings: Callable[..., IngestSettings], ledger: Ledger, running: Any
) -> None:
    settings = fast_settings()
    _deeper_than_path_max(settings.inbox)
    write_image(settings.inbox / "good.jpg", seed=3)
    watcher = Watcher(settings, ledger, no_enqueue)
    with running(watcher):
        wait_for(lambda: len(list_files(ledger)) >= 2)
        assert watcher._thread is not None and watcher._thread.is_alive()
    rows = files_by_path(ledger)
    assert rows["good.jpg"].state == FileState.QUEUED
    [deep] = [r for path, r in rows.items() if path != "good.jpg"]
    assert (deep.state, deep.reason) == (FileState.FAILED, Reason.UNREADABLE)
    assert "move or rename the folders above it" in (deep.message or "")
    assert "bytes, at most" in (deep.message or "")

"""The real Watcher on a tmp inbox: real files, real observers, a real SQLite ledger.

`enqueue` is a list's `append`; Redis and Celery are tested elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select
from watchdog.events import FileCreatedEvent

from reka_ingest.core.settings import IngestSettings
from reka_ingest.core.states import FileState, Origin, Reason
from reka_ingest.ledger import Ledger
from reka_ingest.ledger.intake import NewFile, record_files
from reka_ingest.ledger.schema import Batch
from scheduler.claim import ClaimFolders, claim, inbox_tag
from scheduler.constants import OVERFLOW_SCAN_MIN_GAP
from scheduler.events import OVERFLOW_LOGGER, InboxHandler
from scheduler.watcher import Watcher
from tests.scheduler.conftest import files_by_path, wait_for
from tests.support.images import image_bytes, write_image


def no_enqueue(_batch_id: int) -> None:
    """Batches stay queued in the ledger; these tests look at intake only."""


def inbox_files(inbox: Path) -> list[str]:
    return sorted(str(p.relative_to(inbox)) for p in inbox.rglob("*") if not p.is_dir())


def batched_ids(ledger: Ledger, sent: list[int]) -> set[int]:
    with ledger.read() as s:
        return set(s.scalars(select(Batch.id)).all()) & set(sent)


def test_dropped_files_are_recorded_batched_and_leave_the_inbox(
    fast_settings: Callable[..., IngestSettings], ledger: Ledger, running: Any
) -> None:
    # Batches close by count (7), and the rest when the watcher stops (long max wait).
    settings = fast_settings(batch_max_files=7, batch_max_wait=30.0)
    inbox = settings.inbox
    sent: list[int] = []
    watcher = Watcher(settings, ledger, sent.append)
    with running(watcher):
        expected: dict[str, bytes] = {}
        for i in range(12):
            rel = f"cam{i % 3}/day{i % 2}/img{i}.jpg" if i % 4 else f"img{i}.jpg"
            write_image(inbox / rel, seed=i)
            expected[rel] = (inbox / rel).read_bytes()
        (inbox / "cam1" / "_defaults.json").write_text(json.dumps({"site_id": "north"}))
        (inbox / "cam1" / "day1" / "img1.jpg.json").write_text(
            json.dumps({"camera_id": "c1", "recorded_timestamp_utc": 1_700_000_000})
        )
        (inbox / "cam2" / "day0" / "img2.json").write_text(json.dumps({"index": False}))
        # never taken: hidden, temp, partial, folder defaults
        (inbox / ".hidden.jpg").write_bytes(b"h")
        (inbox / "cam0" / ".sync").mkdir(parents=True)
        (inbox / "cam0" / ".sync" / "x.jpg").write_bytes(b"h")
        (inbox / "upload.jpg.part").write_bytes(b"p")
        (inbox / "notes.tmp").write_bytes(b"t")
        wait_for(lambda: watcher.recorder.totals.recorded >= len(expected))
        time.sleep(settings.min_file_age * 2)  # nothing else should be taken
        assert len(sent) == 1  # the first 7, by count
    rows = files_by_path(ledger)
    assert set(rows) == set(expected)
    for rel, data in expected.items():
        row = rows[rel]
        assert row.state == FileState.QUEUED
        assert row.sha256 == hashlib.sha256(data).hexdigest()
        assert row.source_root == str(inbox.resolve())
        assert row.origin == "event"
        assert Path(row.work_path).read_bytes() == data
        assert Path(row.work_path).parent.parent == settings.work_dir.resolve()
        assert row.batch_id in sent
    assert rows["cam1/day1/img1.jpg"].sidecar == {
        "site_id": "north",
        "camera_id": "c1",
        "recorded_timestamp_utc": 1_700_000_000,
    }
    assert rows["cam1/day1/img1.jpg"].index_flag is True
    assert rows["cam2/day0/img2.jpg"].index_flag is False
    assert rows["cam2/day0/img2.jpg"].sidecar is None
    assert (Path(rows["cam1/day1/img1.jpg"].work_path).parent / "img1.jpg.json").exists()
    with ledger.read() as s:
        sizes = [b.file_count for b in s.scalars(select(Batch).order_by(Batch.id))]
    assert sizes == [7, 5]  # the open batch was closed and sent at stop
    assert batched_ids(ledger, sent) == set(sent)
    assert watcher.stats.scan_found_missed == 0  # the events found every one
    assert inbox_files(inbox) == sorted(
        [".hidden.jpg", "cam0/.sync/x.jpg", "cam1/_defaults.json", "notes.tmp", "upload.jpg.part"]
    )


def test_a_file_written_in_chunks_is_recorded_once_and_whole(
    fast_settings: Callable[..., IngestSettings], ledger: Ledger, running: Any
) -> None:
    # The service defaults, and a writer that reopens the file for every chunk:
    # many close-after-write events, none of which may make it take the file early.
    settings = fast_settings(stable_interval=0.5, min_file_age=1.0)
    target = settings.inbox / "slow.jpg"
    sent: list[int] = []
    watcher = Watcher(settings, ledger, sent.append)
    chunk = os.urandom(4096)
    with running(watcher):
        written = hashlib.sha256()
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            with target.open("ab") as fh:
                fh.write(chunk)
            written.update(chunk)
            time.sleep(0.1)
        wait_for(lambda: watcher.recorder.totals.recorded >= 1)
        time.sleep(1.0)
    rows = files_by_path(ledger)
    assert list(rows) == ["slow.jpg"]
    assert rows["slow.jpg"].sha256 == written.hexdigest()
    assert rows["slow.jpg"].size == len(chunk) * (rows["slow.jpg"].size // len(chunk))
    assert Path(rows["slow.jpg"].work_path).stat().st_size == rows["slow.jpg"].size
    assert not target.exists()


def test_files_present_before_start_are_taken_by_the_start_scan(
    fast_settings: Callable[..., IngestSettings], ledger: Ledger, running: Any
) -> None:
    settings = fast_settings()
    for i in range(5):
        write_image(settings.inbox / f"old/{i}.png", seed=100 + i)
    sent: list[int] = []
    watcher = Watcher(settings, ledger, sent.append)
    with running(watcher):
        wait_for(lambda: watcher.recorder.totals.recorded >= 5)
    rows = files_by_path(ledger)
    assert sorted(rows) == [f"old/{i}.png" for i in range(5)]
    assert {r.origin for r in rows.values()} == {"scan"}
    assert watcher.stats.scan_found_missed == 5
    assert inbox_files(settings.inbox) == []


def test_the_polling_observer_works_too(
    fast_settings: Callable[..., IngestSettings], ledger: Ledger, running: Any
) -> None:
    settings = fast_settings(observer="polling", polling_interval=0.2)
    sent: list[int] = []
    watcher = Watcher(settings, ledger, sent.append)
    with running(watcher):
        for i in range(4):
            write_image(settings.inbox / f"p/{i}.jpg", seed=200 + i)
        wait_for(lambda: watcher.recorder.totals.recorded >= 4)
        wait_for(lambda: watcher.batcher.pending == 0)
    rows = files_by_path(ledger)
    assert sorted(rows) == [f"p/{i}.jpg" for i in range(4)]
    assert {r.origin for r in rows.values()} == {"event"}
    assert watcher.stats.events > 0
    assert watcher.stats.scan_found_missed == 0
    assert sent


def test_a_periodic_scan_finds_what_events_missed(
    fast_settings: Callable[..., IngestSettings], ledger: Ledger, running: Any
) -> None:
    settings = fast_settings(scan_interval=0.5)
    watcher = Watcher(settings, ledger, no_enqueue)
    with running(watcher):
        watcher._observer.stop()  # type: ignore[union-attr]  # events stop arriving
        watcher._observer.join()  # type: ignore[union-attr]
        write_image(settings.inbox / "missed.jpg", seed=7)
        wait_for(lambda: watcher.recorder.totals.recorded >= 1)
    assert files_by_path(ledger)["missed.jpg"].origin == "scan"
    assert watcher.stats.scan_found_missed >= 1


def test_a_kernel_queue_overflow_triggers_a_scan_at_once(
    fast_settings: Callable[..., IngestSettings], ledger: Ledger, running: Any
) -> None:
    settings = fast_settings(scan_interval=600.0)
    watcher = Watcher(settings, ledger, no_enqueue)
    with running(watcher):
        watcher._observer.stop()  # type: ignore[union-attr]  # as if the kernel dropped events
        watcher._observer.join()  # type: ignore[union-attr]
        write_image(settings.inbox / "dropped.jpg", seed=8)
        time.sleep(OVERFLOW_SCAN_MIN_GAP)
        logging.getLogger(OVERFLOW_LOGGER).warning(
            "Inotify queue overflowed; filesystem events were lost"
        )
        wait_for(lambda: watcher.recorder.totals.recorded >= 1)
    assert watcher.stats.overflows == 1
    assert watcher.stats.scans == 2
    assert files_by_path(ledger)["dropped.jpg"].origin == "scan"
    assert not logging.getLogger(OVERFLOW_LOGGER).handlers  # detached at stop


def test_crash_recovery_records_claimed_files_and_batches_rows(
    fast_settings: Callable[..., IngestSettings], ledger: Ledger, running: Any
) -> None:
    settings = fast_settings()
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    # A file claimed by an earlier run that died before writing its row ...
    dropped = write_image(settings.inbox / "cam9" / "lost.jpg", seed=300)
    (settings.inbox / "cam9" / "lost.jpg.json").write_text(json.dumps({"caption": "kept"}))
    data = dropped.read_bytes()
    tag = inbox_tag(str(settings.inbox))
    claimed = claim(
        str(dropped),
        rel_path="cam9/lost.jpg",
        folders=ClaimFolders(str(settings.work_dir), tag),
        sidecar=str(dropped) + ".json",
    )
    assert claimed is not None
    # ... another inbox's claim, which is not ours to take ...
    foreign = settings.work_dir / "0000000000-foreign" / "theirs.jpg"
    foreign.parent.mkdir()
    foreign.write_bytes(image_bytes(301))
    # ... and a row recorded but never batched.
    orphan_row = record_files(
        ledger,
        [
            NewFile(
                path="unbatched.jpg",
                source_root=str(settings.inbox),
                work_path=str(settings.work_dir / "x" / "unbatched.jpg"),
                origin=Origin.EVENT,
                size=3,
                mtime=0.0,
                sha256="0" * 64,
                seen_at=0.0,
            )
        ],
        now=time.time(),
    )[0]
    sent: list[int] = []
    watcher = Watcher(settings, ledger, sent.append)
    with running(watcher):
        pass
    rows = files_by_path(ledger)
    lost = rows["cam9/lost.jpg"]
    assert lost.origin == "recovery"
    assert lost.sha256 == hashlib.sha256(data).hexdigest()
    assert lost.sidecar == {"caption": "kept"}
    assert lost.work_path == claimed.work_path
    assert "theirs.jpg" not in {Path(p).name for p in rows}
    assert rows["unbatched.jpg"].id == orphan_row.file_id
    assert rows["unbatched.jpg"].batch_id is not None
    assert lost.batch_id is not None
    assert set(sent) == {lost.batch_id, rows["unbatched.jpg"].batch_id}
    assert watcher.stats.recovered == 1 and watcher.stats.adopted >= 1


def test_bad_input_is_recorded_and_goes_to_the_outbox(
    fast_settings: Callable[..., IngestSettings], ledger: Ledger, running: Any, tmp_path: Path
) -> None:
    settings = fast_settings()
    inbox = settings.inbox
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(image_bytes(400))
    sent: list[int] = []
    watcher = Watcher(settings, ledger, sent.append)
    with running(watcher):
        write_image(inbox / "first.jpg", seed=401)
        wait_for(lambda: watcher.recorder.totals.recorded >= 1)
        (inbox / "again").mkdir()
        (inbox / "again" / "copy.jpg").write_bytes(
            (settings.work_dir).joinpath(files_by_path(ledger)["first.jpg"].work_path).read_bytes()
        )
        write_image(inbox / "badmeta.jpg", seed=402)
        (inbox / "badmeta.jpg.json").write_text(json.dumps({"recorded_timestamp_utc": "noon"}))
        (inbox / "empty.jpg").write_bytes(b"")
        (inbox / "link.jpg").symlink_to(outside)
        (inbox / "folder.jpg").mkdir()  # a folder named like an image: its files are taken
        write_image(inbox / "folder.jpg" / "inner.jpg", seed=403)
        wait_for(lambda: watcher.recorder.totals.recorded >= 6)
    rows = files_by_path(ledger)
    assert rows["again/copy.jpg"].state == FileState.DUPLICATE
    assert rows["again/copy.jpg"].duplicate_of == rows["first.jpg"].id
    assert (settings.done_path / "again" / "copy.jpg").exists()
    bad = rows["badmeta.jpg"]
    assert (bad.state, bad.reason) == (FileState.FAILED, Reason.BAD_SIDECAR)
    assert "recorded_timestamp_utc" in (bad.message or "")
    record = json.loads((settings.failed_path / "badmeta.jpg.error.json").read_text())
    assert record["reason"] == "bad_sidecar" and "recorded_timestamp_utc" in record["message"]
    assert (settings.failed_path / "badmeta.jpg").exists()
    assert (settings.failed_path / "badmeta.jpg.json").exists()  # the sidecar went along
    assert rows["empty.jpg"].reason == Reason.EMPTY_FILE
    link = rows["link.jpg"]
    assert (link.state, link.reason) == (FileState.FAILED, Reason.REFUSED_PATH)
    assert (inbox / "link.jpg").is_symlink()  # never moved, never followed
    assert outside.read_bytes() == image_bytes(400)
    assert (settings.failed_path / "link.jpg.error.json").exists()
    assert rows["folder.jpg/inner.jpg"].state == FileState.QUEUED
    assert "folder.jpg" not in rows
    assert inbox_files(inbox) == ["link.jpg"]


def test_the_handler_survives_its_own_errors(tmp_path: Path) -> None:
    class Broken(queue.SimpleQueue[Any]):
        def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
            raise RuntimeError("boom")

    handler = InboxHandler(str(tmp_path), Broken())
    handler.on_any_event(FileCreatedEvent(str(tmp_path / "a.jpg")))
    assert handler.errors == 1
    ok: queue.SimpleQueue[Any] = queue.SimpleQueue()
    handler = InboxHandler(str(tmp_path), ok)
    handler.on_any_event(FileCreatedEvent(str(tmp_path / ".a.jpg")))
    handler.on_any_event(FileCreatedEvent(str(tmp_path / "a.jpg.json")))
    handler.on_any_event(FileCreatedEvent(str(tmp_path / "a.jpg")))
    assert ok.qsize() == 1

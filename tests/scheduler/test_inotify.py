"""The inbox's inotify observer: the indexed move grouper keeps watchdog's contract
(order, pairing, the hold on an unpaired IN_MOVED_FROM), and the real observer
still reports renames, moves in (as moves with no source) and moved folders."""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from watchdog.events import FileSystemEvent, FileSystemEventHandler

from scheduler.events import EVENT_TYPES, Kind

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")

if sys.platform.startswith("linux"):
    from watchdog.observers.inotify_c import InotifyConstants, InotifyEvent
    from watchdog.observers.inotify_move_event_grouper import PathedInotifyEvent

    from scheduler.inotify import InboxObserver, IndexedMoveGrouper

DELAY = 0.3


def ev(mask: int, name: str, cookie: int = 0) -> PathedInotifyEvent:
    event = InotifyEvent(1, mask, cookie, name.encode())  # type: ignore[arg-type]
    return PathedInotifyEvent(event, b"/in/" + name.encode())


def created(name: str) -> PathedInotifyEvent:
    return ev(InotifyConstants.IN_CREATE, name)


def moved_from(name: str, cookie: int) -> PathedInotifyEvent:
    return ev(InotifyConstants.IN_MOVED_FROM, name, cookie)


def moved_to(name: str, cookie: int) -> PathedInotifyEvent:
    return ev(InotifyConstants.IN_MOVED_TO, name, cookie)


def test_a_paired_move_comes_out_as_one_tuple_in_the_place_of_its_second_half() -> None:
    g = IndexedMoveGrouper(delay=DELAY)
    src, dst = folder_moved_from("a.old", 7), moved_to("a", 7)
    before, after = created("x"), created("y")
    for e in (before, src, after, dst):
        g.put_event(e)
    started = time.monotonic()
    assert [g.read_event() for _ in range(3)] == [before, after, (src, dst)]
    assert time.monotonic() - started < DELAY  # the paired FROM held nothing back
    assert len(g) == 0


def folder_moved_from(name: str, cookie: int) -> PathedInotifyEvent:
    return ev(InotifyConstants.IN_MOVED_FROM | InotifyConstants.IN_ISDIR, name, cookie)


def test_a_files_move_from_is_never_held_and_can_still_pair_while_queued() -> None:
    g = IndexedMoveGrouper(delay=5.0)
    claimed, behind = moved_from("claimed.jpg", 5), created("next")
    g.put_event(claimed)
    g.put_event(behind)
    started = time.monotonic()
    assert g.read_event() == claimed  # at once: a claim never stalls the events behind it
    assert g.read_event() == behind
    assert time.monotonic() - started < 1.0
    src, dst = moved_from("b.part", 6), moved_to("b.jpg", 6)
    g.put_event(src)
    g.put_event(dst)  # both halves in before the first is read: one pair
    assert g.read_event() == (src, dst)


def test_an_unpaired_folder_move_from_is_held_for_the_delay_and_keeps_its_place() -> None:
    g = IndexedMoveGrouper(delay=DELAY)
    gone, behind = folder_moved_from("claimed", 9), created("next")
    g.put_event(gone)
    g.put_event(behind)
    assert g.get_queued_moved_from_event(9) == gone
    started = time.monotonic()
    assert g.read_event() == gone
    assert time.monotonic() - started >= DELAY * 0.9
    assert g.read_event() == behind
    assert g.get_queued_moved_from_event(9) is None


def test_an_unpaired_move_to_passes_at_once_and_cookies_do_not_mix() -> None:
    g = IndexedMoveGrouper(delay=DELAY)
    arrival, other = moved_to("from-outside", 3), moved_from("b", 4)
    g.put_event(arrival)
    g.put_event(other)
    assert g.read_event() == arrival
    assert g.get_queued_moved_from_event(3) is None
    assert g.get_queued_moved_from_event(4) == other


def test_a_pairing_wakes_a_reader_waiting_on_the_held_head() -> None:
    g = IndexedMoveGrouper(delay=5.0)
    src, dst = folder_moved_from("c.part", 11), moved_to("c", 11)
    g.put_event(src)
    out: queue.SimpleQueue[object] = queue.SimpleQueue()
    reader = threading.Thread(target=lambda: out.put(g.read_event()))
    reader.start()
    time.sleep(0.1)
    g.put_event(dst)
    assert out.get(timeout=2.0) == (src, dst)  # long before the 5 s hold
    reader.join()


def test_close_releases_a_waiting_reader_and_discard_forgets_everything() -> None:
    g = IndexedMoveGrouper(delay=DELAY)
    g.put_event(moved_from("d", 12))
    g.discard_pending_events()
    assert len(g) == 0
    assert g.get_queued_moved_from_event(12) is None
    out: queue.SimpleQueue[object] = queue.SimpleQueue()
    reader = threading.Thread(target=lambda: out.put(g.read_event()))
    reader.start()
    g.close()
    assert out.get(timeout=2.0) is None
    reader.join()


class Collect(FileSystemEventHandler):
    def __init__(self) -> None:
        self.events: queue.SimpleQueue[FileSystemEvent] = queue.SimpleQueue()

    def on_any_event(self, event: FileSystemEvent) -> None:
        if not event.is_directory and event.event_type != "modified":
            self.events.put(event)

    def until(self, wanted: tuple[str, str, str], timeout: float = 5.0) -> None:
        self.until_any(lambda kind, src, dest: (kind, src, dest) == wanted, repr(wanted), timeout)

    def until_moved_to(self, dest: str, sources: tuple[str, ...], timeout: float = 5.0) -> None:
        self.until_any(
            lambda kind, src, got: kind == "moved" and got == dest and src in sources,
            f"a move to {dest}",
            timeout,
        )

    def until_any(self, match: Callable[[str, str, str], bool], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                e = self.events.get(timeout=0.1)
            except queue.Empty:
                continue
            if match(e.event_type, os.fsdecode(e.src_path), os.fsdecode(e.dest_path)):
                return
        raise AssertionError(f"no event {what}")


def test_the_real_observer_reports_renames_arrivals_and_files_in_moved_folders(
    tmp_path: Path,
) -> None:
    inbox, outside = tmp_path / "inbox", tmp_path / "outside"
    inbox.mkdir()
    outside.mkdir()
    handler = Collect()
    observer = InboxObserver()
    observer.schedule(handler, str(inbox), recursive=True)
    observer.start()
    try:
        emitter = next(iter(observer.emitters))
        assert isinstance(emitter._inotify._move_event_grouper, IndexedMoveGrouper)  # type: ignore[attr-defined]
        (inbox / "a.part").write_bytes(b"x")
        os.rename(inbox / "a.part", inbox / "a.jpg")
        # one pair, or its two halves when the first was read before the second came
        handler.until_moved_to(str(inbox / "a.jpg"), sources=(str(inbox / "a.part"), ""))
        (outside / "b.jpg").write_bytes(b"y")
        os.rename(outside / "b.jpg", inbox / "b.jpg")
        handler.until(("moved", "", str(inbox / "b.jpg")))  # full events: a move, no source
        (inbox / "old").mkdir()
        time.sleep(0.2)  # its watch is in place
        os.rename(inbox / "old", inbox / "new")
        time.sleep(0.2)
        (inbox / "new" / "c.jpg").write_bytes(b"z")
        handler.until(("created", str(inbox / "new" / "c.jpg"), ""))
    finally:
        observer.stop()
        observer.join(5)
    assert not observer.is_alive()


def test_with_a_sink_file_events_skip_watchdogs_threads_and_folders_still_work(
    tmp_path: Path,
) -> None:
    inbox, outside = tmp_path / "inbox", tmp_path / "outside"
    inbox.mkdir()
    outside.mkdir()
    fast: queue.SimpleQueue[tuple[Kind, str, str]] = queue.SimpleQueue()
    handler = Collect()
    observer = InboxObserver(
        sink=lambda kind, path: fast.put((kind, path, threading.current_thread().name))
    )
    observer.schedule(handler, str(inbox), recursive=True, event_filter=EVENT_TYPES)
    observer.start()

    def next_fast() -> tuple[Kind, str]:
        kind, path, _ = fast.get(timeout=5.0)
        return kind, path

    try:
        (inbox / "a.jpg").write_bytes(b"x")
        assert next_fast() == (Kind.CHANGED, str(inbox / "a.jpg"))
        assert next_fast() == (Kind.CLOSED, str(inbox / "a.jpg"))
        (outside / "b.jpg").write_bytes(b"y")
        os.rename(outside / "b.jpg", inbox / "b.jpg")
        assert next_fast() == (Kind.MOVED, str(inbox / "b.jpg"))
        os.rename(inbox / "b.jpg", outside / "b.jpg")  # leaving: nothing to do
        (inbox / "sub").mkdir()  # a folder: watchdog's own way, and a watch for it
        time.sleep(0.3)
        (inbox / "sub" / "c.jpg").write_bytes(b"z")
        assert next_fast() == (Kind.CHANGED, str(inbox / "sub" / "c.jpg"))
        assert next_fast() == (Kind.CLOSED, str(inbox / "sub" / "c.jpg"))
        time.sleep(0.3)
        assert fast.empty()  # the move out said nothing
        assert handler.events.empty()  # no file event took the slow way
    finally:
        observer.stop()
        observer.join(5)

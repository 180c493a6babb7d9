"""watchdog's inotify observer, with move pairing that costs O(1) per event.

watchdog (7.1) pairs IN_MOVED_FROM with IN_MOVED_TO in a delay queue that it
searches from the front, twice for every IN_MOVED_TO. An inbox sees a great
many unpaired moves: every file the watcher claims leaves with an IN_MOVED_FROM
(work/ is not watched), every file moved in from elsewhere arrives with an
unpaired IN_MOVED_TO. In a burst the queue holds thousands of events, and that
search is quadratic in the burst.

`IndexedMoveGrouper` keeps the same contract for folders (same order, a
folder's IN_MOVED_FROM held back `DELAY` seconds waiting for its partner, pairs
handed on as a tuple), with the waiting IN_MOVED_FROMs indexed by cookie. A
file's IN_MOVED_FROM is never held back: watchdog pairs the halves of a move
only to move a folder's watches along, and each claim's IN_MOVED_FROM, held,
stalled every event behind it for `DELAY`, all through a burst. A file's move
still comes as one pair when both halves are in before the first is read, and
else as its two halves (`FileMovedEvent(src, "")`, `FileMovedEvent("", dest)`),
which the watcher treats alike: what counts is the destination.

`InboxObserver` is watchdog's `InotifyObserver` with that grouper in each watch
group and, given a `sink`, file events handed to it straight from the inotify
thread (see `_WatchGroup`); watches, recursion, folder moves and overflow
handling stay watchdog's own. It reaches into watchdog's inotify internals, so
pyproject pins watchdog's minor version, and tests/scheduler/test_inotify.py
checks the swap still takes. Linux only.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from watchdog.observers.api import DEFAULT_OBSERVER_TIMEOUT, BaseObserver
from watchdog.observers.inotify import InotifyEmitter, InotifyObserver, InotifyWatchGroup
from watchdog.observers.inotify_c import InotifyEvent, InotifyFD
from watchdog.observers.inotify_move_event_grouper import (
    GroupedInotifyEvent,
    InotifyMoveEventGrouper,
    PathedInotifyEvent,
)

from scheduler.events import Kind

Sink = Callable[[Kind, str], None]

# How long an IN_MOVED_FROM waits for its IN_MOVED_TO: watchdog's own figure.
DELAY: Final = InotifyMoveEventGrouper.delay
# How long the inotify thread lets events gather once one is waiting, before it reads.
GATHER_SECONDS: Final = 0.02


@dataclass(slots=True, eq=False)
class _Slot:
    item: GroupedInotifyEvent
    ready_at: float  # monotonic; 0.0 for events that are never held back
    live: bool = True  # False once a waiting IN_MOVED_FROM was paired (its pair is queued)


class IndexedMoveGrouper:
    """Drop-in for watchdog's InotifyMoveEventGrouper: O(1) put, find and pairing."""

    def __init__(self, delay: float = DELAY) -> None:
        self.delay = delay
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[_Slot] = deque()
        self._waiting: dict[int, _Slot] = {}  # cookie -> its unpaired IN_MOVED_FROM
        self._closed = False

    def put_event(self, event: PathedInotifyEvent) -> None:
        ev = event.ev
        with self._cond:
            if ev.is_moved_to:
                partner = self._waiting.pop(ev.cookie, None)
                if partner is not None:
                    partner.live = False
                    source = partner.item
                    assert isinstance(source, PathedInotifyEvent)  # only FROMs wait
                    self._queue.append(_Slot((source, event), 0.0))
                else:
                    self._queue.append(_Slot(event, 0.0))
            elif ev.is_moved_from:
                held = self.delay if ev.is_directory else 0.0
                slot = _Slot(event, time.monotonic() + held if held else 0.0)
                self._waiting[ev.cookie] = slot
                self._queue.append(slot)
            else:
                self._queue.append(_Slot(event, 0.0))
            self._cond.notify()

    def read_event(self) -> GroupedInotifyEvent | None:
        """The next event in order (None once closed); an unpaired IN_MOVED_FROM at
        the head is handed on only after its delay, as watchdog does."""
        with self._cond:
            while not self._closed:
                queue = self._queue
                while queue and not queue[0].live:
                    queue.popleft()
                if not queue:
                    self._cond.wait()
                    continue
                head = queue[0]
                wait = head.ready_at - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)  # a pairing or close wakes us early
                    continue
                queue.popleft()
                item = head.item
                if (
                    isinstance(item, PathedInotifyEvent)
                    and item.ev.is_moved_from
                    and self._waiting.get(item.ev.cookie) is head
                ):
                    del self._waiting[item.ev.cookie]
                return item
            return None

    def get_queued_moved_from_event(self, cookie: int) -> PathedInotifyEvent | None:
        with self._cond:
            slot = self._waiting.get(cookie)
        if slot is None:
            return None
        item = slot.item
        return item if isinstance(item, PathedInotifyEvent) else None

    def discard_pending_events(self) -> None:
        with self._cond:
            self._queue.clear()
            self._waiting.clear()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return sum(1 for slot in self._queue if slot.live)


class _WatchGroup(InotifyWatchGroup):
    """A watch group whose file events go straight to `sink`, when there is one.

    A file's creation, close after writing and arrival by rename are handed to
    `sink(kind, path)` on the inotify thread, skipping the grouper, the emitter
    thread, three event objects and the dispatcher thread for every file; a file
    leaving (IN_MOVED_FROM: every claim) is dropped there, as the watcher has
    nothing to do for it. Folder events, and the file events watchdog makes up for
    a new folder's contents, take watchdog's own way, so watches follow folders
    exactly as watchdog's do.
    """

    sink: Sink | None = None

    def __post_init__(self) -> None:
        # Swapped before the watches exist, so no event ever meets the stock grouper.
        self._move_event_grouper = IndexedMoveGrouper()  # type: ignore[assignment]
        super().__post_init__()

    def on_event(self, event: InotifyEvent) -> None:
        sink = self.sink
        if sink is None or event.is_directory:
            super().on_event(event)
            return
        if event.is_moved_to:
            kind = Kind.MOVED
        elif event.is_close_write:
            kind = Kind.CLOSED
        elif event.is_create:
            kind = Kind.CHANGED
        elif event.is_moved_from:
            return
        else:
            super().on_event(event)
            return
        with self._lock:
            if not self.is_active:
                return
            path = self._build_event_source_path(event)
        if path is not None:
            sink(kind, os.fsdecode(path))


class _Emitter(InotifyEmitter):
    """Full events: a file moved in from outside the inbox comes as a move (with no
    source), not as a creation, so the watcher knows it arrived whole."""

    def __init__(self, *args: Any, sink: Sink | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sink = sink

    def build_and_queue_event(
        self, event: GroupedInotifyEvent, *, full_events: bool = True
    ) -> None:
        super().build_and_queue_event(event, full_events=full_events)

    def on_thread_start(self) -> None:
        group = _WatchGroup.__new__(_WatchGroup)
        group.sink = self._sink  # before its watches exist: no event misses the sink
        group.__init__(  # type: ignore[misc]
            self._inotify_fd,
            os.fsencode(self.watch.path),
            is_recursive=self.watch.is_recursive,
            event_mask=self.get_event_mask_from_filter(),
            follow_symlink=self.watch.follow_symlink,
        )
        self._inotify = group


class _GatheringFD(InotifyFD):
    """watchdog's inotify descriptor, read a moment after it becomes readable.

    watchdog reads as soon as one event is waiting: in a burst (a rename in, and
    the claim's rename out, for every file) its thread woke for nearly every event
    and took the GIL from the processing thread each time. Waiting `GATHER_SECONDS`
    first lets one read bring hundreds of events; an event is handed on at most
    that much later. The kernel's queue (`max_queued_events`, 16384 by default)
    holds far more than a burst brings in that time; should it overflow anyway,
    the overflow is reported as before and the watcher scans.
    """

    def _check_inotify_fd(self) -> bool:
        ready = super()._check_inotify_fd()
        if ready:
            time.sleep(GATHER_SECONDS)
        return ready


class InboxObserver(InotifyObserver):
    """watchdog's InotifyObserver with `IndexedMoveGrouper` in each watch group, and
    file events handed to `sink` directly when one is given (see `_WatchGroup`)."""

    def __init__(
        self, *, timeout: float = DEFAULT_OBSERVER_TIMEOUT, sink: Sink | None = None
    ) -> None:
        self._inotify_fd = _GatheringFD()
        self._inotify_fd.start()
        BaseObserver.__init__(
            self, _Emitter, timeout=timeout, inotify_fd=self._inotify_fd, sink=sink
        )

"""The watchdog handler: filter, log, hand off. Nothing else.

It runs on the observer's thread, so it never stats, hashes or touches the
ledger: it drops names the watcher ignores and puts `(kind, path)` on a queue
that the processing thread drains. An exception here is logged and survived;
the periodic scan finds whatever an event lost.
"""

from __future__ import annotations

import logging
import os
import queue
from collections.abc import Callable
from enum import IntEnum
from typing import Final

from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)

from reka_ingest.core.logs import get_logger
from scheduler.names import is_candidate_path

log = get_logger(__name__)
_stdlib_log = logging.getLogger(__name__)  # a cheap level check before a per-event line


class Kind(IntEnum):
    CHANGED = 1  # created or written to
    CLOSED = 2  # closed after writing (inotify only)
    MOVED = 3  # renamed into place (from inside the inbox or from elsewhere)


Item = tuple[Kind, str]

# Only these reach the handler; on inotify they also form the kernel's event mask.
# Writes (IN_MODIFY) are left out on purpose: a file is tracked from its creation
# (or move into place) until it is whole, and the tracker looks at it on its own
# schedule, so a write event per chunk would only add load in a burst. Files
# whose creation no event reported are the scans' job.
EVENT_TYPES: Final[list[type[FileSystemEvent]]] = [
    FileCreatedEvent,
    FileMovedEvent,
    FileClosedEvent,
]


def _text(path: bytes | str) -> str:
    return os.fsdecode(path)


class InboxHandler(FileSystemEventHandler):
    def __init__(self, root: str, out: queue.SimpleQueue[Item]) -> None:
        self.root = root
        self.out = out
        self.errors = 0

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            if event.is_directory:
                return
            if isinstance(event, FileMovedEvent):
                # dest_path is empty for a file moved out (its IN_MOVED_FROM alone).
                path, kind = _text(event.dest_path), Kind.MOVED
            elif isinstance(event, FileClosedEvent):
                path, kind = _text(event.src_path), Kind.CLOSED
            elif isinstance(event, FileCreatedEvent | FileModifiedEvent):
                path, kind = _text(event.src_path), Kind.CHANGED
            else:
                return
        except Exception:  # the observer thread must survive; scans catch up
            self.errors += 1
            log.exception("watcher.handler_failed", fs_event=repr(event))
            return
        self.offer(kind, path)

    def offer(self, kind: Kind, path: str) -> None:
        """Filter one file event and hand it on (also called by the inotify thread
        directly, see scheduler.inotify)."""
        try:
            if not is_candidate_path(self.root, path):
                return
            if _stdlib_log.isEnabledFor(logging.DEBUG):
                log.debug("watcher.event", kind=kind.name.lower(), path=path)
            self.out.put((kind, path))
        except Exception:  # the observer thread must survive; scans catch up
            self.errors += 1
            log.exception("watcher.handler_failed", path=path)


# watchdog tells of a kernel queue overflow (inotify's max_queued_events) only
# in a log line; events were lost, so the watcher should scan now, not at the
# next `scan_interval`.
OVERFLOW_LOGGER: Final = "watchdog.observers.inotify_c"


class OverflowAlarm(logging.Handler):
    """Turns watchdog's "queue overflowed" warning into a call to `on_overflow`."""

    def __init__(self, on_overflow: Callable[[], None]) -> None:
        super().__init__(logging.WARNING)
        self.on_overflow = on_overflow

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in str(record.msg).lower():
            self.on_overflow()

    def attach(self) -> None:
        source = logging.getLogger(OVERFLOW_LOGGER)
        if not source.isEnabledFor(logging.WARNING):
            source.setLevel(logging.WARNING)  # a quieter root level must not hide it from us
        source.addHandler(self)

    def detach(self) -> None:
        logging.getLogger(OVERFLOW_LOGGER).removeHandler(self)

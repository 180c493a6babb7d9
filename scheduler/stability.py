"""When is a file whole? A pure tracker with an injected clock; it never stats.

The caller reports what it saw (size and mtime, or "gone"); the tracker says
wait, whole, gone or never-stable, and when each path is due for its next look.

A path is **whole** when both hold:
- *steady*: the same size and mtime were seen at two looks at least
  `stable_interval` apart, or a close-after-write (inotify only) arrived after
  the last change, which stands in for the second look;
- *old enough*: it has not changed for `min_age` seconds (by its mtime; by
  how long we have seen it unchanged when the mtime lies in the future, as on a
  share whose clock runs ahead).

A rename into the inbox (IN_MOVED_TO) counts as a close: moving a finished
file into place is how careful writers publish one, so the move stands in for
the second look, and the file is looked at once, at once (its mtime is
usually old already, when it was written elsewhere first).

A close never skips the age rule: a writer that reopens the file for every
chunk closes it many times before it is done. A path still not whole
`give_up_after` seconds after it was first seen is reported never-stable.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from reka_ingest.core.constants import DEFAULT_NEVER_STABLE_AFTER
from reka_ingest.core.states import Origin

NS_PER_SECOND = 1_000_000_000
# Float slack when comparing elapsed times with the intervals they were scheduled by.
_SLACK = 1e-6

Signature = tuple[int, int]  # (size, mtime_ns)


class Verdict(StrEnum):
    WAIT = "wait"  # look again at `next_due()`
    WHOLE = "whole"  # take it now
    GONE = "gone"  # it vanished (taken by someone else, deleted, renamed)
    NEVER_STABLE = "never_stable"  # still changing after `give_up_after`


@dataclass(slots=True)
class _Entry:
    origin: Origin
    first_seen: float
    due: float
    sig: Signature | None = None
    sig_since: float = 0.0  # when we first saw `sig`
    closed_at: float | None = None  # when the last close-after-write was reported


class StabilityTracker:
    """Paths waiting to become whole, each with the time of its next look.

    Every path returned by `due()` must then be passed to `check()` (which
    schedules its next look or lets it go) or to `forget()`.
    """

    def __init__(
        self,
        *,
        stable_interval: float,
        min_age: float,
        give_up_after: float = DEFAULT_NEVER_STABLE_AFTER,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.stable_interval = stable_interval
        self.min_age = min_age
        self.give_up_after = give_up_after
        self.clock = clock
        self._entries: dict[str, _Entry] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, path: object) -> bool:
        return path in self._entries

    def origin(self, path: str) -> Origin:
        return self._entries[path].origin

    def first_seen(self, path: str) -> float:
        return self._entries[path].first_seen

    # --- what the caller reports ----------------------------------------------

    def seen(self, path: str, origin: Origin, sig: Signature | None = None) -> bool:
        """A path was reported (event or scan); returns True if it is new to us.

        A new path is first looked at after `stable_interval` (it is most likely
        being written right now), or at once when the reporter already has its
        size and mtime (a scan), which then count as the first look.
        """
        if path in self._entries:
            return False
        now = self.clock()
        entry = _Entry(origin=origin, first_seen=now, due=now + self.stable_interval)
        if sig is not None:
            entry.sig, entry.sig_since = sig, now
            entry.due = self._next_due(entry, now)
        self._entries[path] = entry
        self._push(path, entry)
        return True

    def closed(self, path: str, origin: Origin) -> None:
        """A close-after-write was reported: look when the age rule can first pass.

        The writer just wrote, so its mtime is about now and the file cannot be
        old enough before `now + min_age`; one look then can find it whole (the
        close standing in for the second look), where two would be needed without.
        """
        now = self.clock()
        entry = self._entries.get(path)
        if entry is None:
            entry = self._entries[path] = _Entry(origin=origin, first_seen=now, due=now)
        entry.closed_at = now
        due = min(now + self.min_age, entry.first_seen + self.give_up_after)
        if entry.sig is None or due < entry.due:
            entry.due = due
            self._push(path, entry)

    def moved(self, path: str, origin: Origin) -> None:
        """A file was renamed into place: look now; the move counts as a close.

        Unlike `closed`, the mtime is not assumed to be now (the file was most
        likely written elsewhere earlier), so the first look can find it whole.
        """
        now = self.clock()
        entry = self._entries.get(path)
        if entry is None:
            entry = self._entries[path] = _Entry(origin=origin, first_seen=now, due=now)
        entry.closed_at = now
        entry.sig = None  # what is there now is another file than any earlier look saw
        entry.due = now
        self._push(path, entry)

    def defer(
        self, path: str, origin: Origin, first_seen: float, sig: Signature, until: float
    ) -> None:
        """A whole file that must wait (for its sidecar): look again at `until`, when
        it is whole at once if `sig` has not changed; its first-seen time is kept."""
        now = self.clock()
        entry = _Entry(origin=origin, first_seen=first_seen, due=max(until, now))
        entry.sig, entry.sig_since = sig, now - self.stable_interval
        self._entries[path] = entry
        self._push(path, entry)

    def forget(self, path: str) -> None:
        self._entries.pop(path, None)

    # --- the caller's loop --------------------------------------------------------

    def due(self, limit: int) -> list[str]:
        """Up to `limit` paths whose next look is due now, earliest first."""
        now = self.clock()
        out: list[str] = []
        heap = self._heap
        while heap and len(out) < limit and heap[0][0] <= now:
            due, _, path = heapq.heappop(heap)
            entry = self._entries.get(path)
            if entry is None or entry.due != due:
                continue  # forgotten, or rescheduled: a stale heap item
            entry.due = float("inf")  # owned by the caller until check()/forget()
            out.append(path)
        return out

    def next_due(self) -> float | None:
        """When the earliest look is due (None when nothing is tracked)."""
        heap = self._heap
        while heap:
            due, _, path = heap[0]
            entry = self._entries.get(path)
            if entry is not None and entry.due == due:
                return due
            heapq.heappop(heap)
        return None

    def check(self, path: str, sig: Signature | None) -> Verdict:
        """Judge `path` by what was just seen (None: it is not there any more)."""
        now = self.clock()
        entry = self._entries.get(path)
        if entry is None:
            entry = self._entries[path] = _Entry(origin=Origin.SCAN, first_seen=now, due=now)
        if sig is None:
            self.forget(path)
            return Verdict.GONE
        if sig != entry.sig:
            entry.sig, entry.sig_since = sig, now
        if self._whole(entry, now):
            self.forget(path)
            return Verdict.WHOLE
        if now - entry.first_seen + _SLACK >= self.give_up_after:
            self.forget(path)
            return Verdict.NEVER_STABLE
        entry.due = self._next_due(entry, now)
        self._push(path, entry)
        return Verdict.WAIT

    # --- the rules ------------------------------------------------------------------

    def _push(self, path: str, entry: _Entry) -> None:
        heapq.heappush(self._heap, (entry.due, next(self._seq), path))

    def _changed_at(self, entry: _Entry) -> float:
        """When the file last changed: its mtime, unless that lies in the future."""
        mtime = entry.sig[1] / NS_PER_SECOND if entry.sig is not None else entry.sig_since
        return entry.sig_since if mtime > entry.sig_since else mtime

    def _close_counts(self, entry: _Entry) -> bool:
        """A close counts when nothing was written after it (mtime not newer than it)."""
        if entry.closed_at is None or entry.sig is None:
            return False
        return entry.sig[1] / NS_PER_SECOND <= entry.closed_at

    def _whole(self, entry: _Entry, now: float) -> bool:
        steady = now - entry.sig_since + _SLACK >= self.stable_interval or self._close_counts(entry)
        old_enough = now - self._changed_at(entry) + _SLACK >= self.min_age
        return steady and old_enough

    def _next_due(self, entry: _Entry, now: float) -> float:
        age_ok_at = self._changed_at(entry) + self.min_age
        if self._close_counts(entry):
            due = age_ok_at
        else:
            due = max(entry.sig_since + self.stable_interval, age_ok_at)
        return max(min(due, entry.first_seen + self.give_up_after), now)

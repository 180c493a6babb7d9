"""The folder watcher: events for speed, scans for truth, one processing thread.

    observer thread(s)          processing thread
    ------------------          ------------------------------------------------
    InboxHandler  --queue-->    drain -> StabilityTracker -> look (lstat) when due
    (filter, hand off)          whole -> claim (rename) -> describe (hash, sidecar)
                                -> Recorder (record_files per group) -> outbox | Batcher
                                scan at start and every `scan_interval`

At `start()`, before any event is taken, it recovers from an earlier crash
(claimed files with no row, rows with no batch). At `stop()`, the group in
hand is recorded and the open batch is closed and enqueued.

Paths are plain strings below the inbox's resolved path; what the ledger
records as `path` is the part below the inbox, and `source_root` is the inbox.
"""

from __future__ import annotations

import os
import queue
import stat
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from scheduler.batcher import Batcher, BatchLimits, Enqueue, ledger_batch_groups, ledger_batches
from scheduler.claim import (
    ClaimFolders,
    check_same_filesystem,
    claim,
    inbox_tag,
    prune_claim_folders,
)
from scheduler.constants import (
    MAX_CHECKS_PER_TICK,
    MAX_EVENTS_PER_TICK,
    MAX_TICK_SECONDS,
    OVERFLOW_SCAN_MIN_GAP,
    STOP_TIMEOUT_SECONDS,
)
from scheduler.describe import describe
from scheduler.events import EVENT_TYPES, InboxHandler, Item, Kind, OverflowAlarm
from scheduler.recorder import Recorder
from scheduler.recovery import adopt_unbatched, finish_moves, recover_claims
from scheduler.sidecar import DefaultsReader, find_sidecar
from scheduler.stability import StabilityTracker, Verdict
from scheduler.walk import walk
from worker.ledger import Ledger
from worker.ledger.intake import NewFile
from worker.logs import get_logger
from worker.settings import IngestSettings, ObserverKind
from worker.states import Reason

log = get_logger(__name__)

ORIGIN_EVENT = "event"
ORIGIN_SCAN = "scan"


@dataclass(slots=True)
class WatcherStats:
    events: int = 0  # items taken off the handler's queue
    scans: int = 0
    scan_found_missed: int = 0  # files a scan found that no event had reported
    claimed: int = 0
    lost_races: int = 0  # gone by the time we renamed it: someone else took it
    refused: int = 0  # symbolic links and other non-files, recorded failed in place
    never_stable: int = 0
    deferred: int = 0  # whole, but its sidecar was still being written
    recovered: int = 0
    adopted: int = 0
    overflows: int = 0  # the kernel dropped events: scanned early
    orphan_sidecars: int = 0  # sidecars whose image never came, recorded failed alone
    moves_finished: int = 0  # final files a crash had left in work/, moved at start


def _native_observer(handler: InboxHandler) -> BaseObserver:
    """On Linux inotify with O(1) move pairing and file events handed straight to
    the handler (see scheduler.inotify); elsewhere watchdog's pick."""
    if sys.platform == "linux":
        from scheduler.inotify import InboxObserver  # noqa: PLC0415 - imports Linux-only modules

        return InboxObserver(sink=handler.offer)
    return Observer()  # type: ignore[unreachable,unused-ignore]  # mypy checks for Linux only


class Watcher:
    """Watches `settings.inbox` and turns whole files into recorded, batched rows.

    `enqueue(batch_id)` is called once per closed batch (Celery's `send_task`
    in production, a list's `append` in tests).
    """

    def __init__(
        self,
        settings: IngestSettings,
        ledger: Ledger,
        enqueue: Enqueue,
        clock: Callable[[], float] = time.time,
        *,
        give_up_after: float | None = None,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.clock = clock
        self.root = os.path.realpath(settings.inbox)
        self.work_dir = os.path.realpath(settings.work_dir)
        self.tag = inbox_tag(self.root)
        self.claims = ClaimFolders(self.work_dir, self.tag)
        self.stats = WatcherStats()
        self.tracker = StabilityTracker(
            stable_interval=settings.stable_interval,
            min_age=settings.min_file_age,
            give_up_after=settings.never_stable_after if give_up_after is None else give_up_after,
            clock=clock,
        )
        self.batcher = Batcher(
            BatchLimits.from_settings(settings),
            create=ledger_batches(ledger, clock),
            create_many=ledger_batch_groups(ledger, clock),
            enqueue=enqueue,
            clock=clock,
        )
        self.recorder = Recorder(settings, ledger, self.batcher, clock=clock)
        self.defaults = DefaultsReader(self.root)
        self._queue: queue.SimpleQueue[Item] = queue.SimpleQueue()
        self._handler = InboxHandler(self.root, self._queue)
        self._refused: set[str] = set()  # in-place refusals, kept out of later scans
        self._sidecars: dict[str, float] = {}  # sidecars left in the inbox -> first seen
        self._folders_ok: dict[str, bool] = {}
        self._next_scan = 0.0
        self._last_scan = 0.0
        self._overflowed = threading.Event()
        self._alarm = OverflowAlarm(self._overflowed.set)
        self._halt = threading.Event()
        self._stop_requested = threading.Event()
        self._thread: threading.Thread | None = None
        self._observer: BaseObserver | None = None

    # --- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        """Check the folders, recover from a crash, then start observing and processing."""
        check_same_filesystem(self.settings)
        self.root = os.path.realpath(self.settings.inbox)
        self.work_dir = os.path.realpath(self.settings.work_dir)
        self.claims = ClaimFolders(self.work_dir, self.tag)
        self.settings.failed_path.mkdir(parents=True, exist_ok=True)
        self.stats.recovered = recover_claims(
            self.recorder,
            ledger=self.ledger,
            work_dir=self.work_dir,
            tag=self.tag,
            source_root=self.root,
            defaults=self.defaults,
            max_image_bytes=self.settings.max_image_bytes,
            clock=self.clock,
        )
        self.stats.moves_finished = finish_moves(
            self.settings, self.ledger, work_dir=self.work_dir, tag=self.tag, now=self.clock()
        )
        self.stats.adopted = adopt_unbatched(self.ledger, self.batcher)
        observer: BaseObserver = (
            PollingObserver(timeout=self.settings.polling_interval)
            if self.settings.observer is ObserverKind.POLLING
            else _native_observer(self._handler)
        )
        observer.schedule(self._handler, self.root, recursive=True, event_filter=EVENT_TYPES)
        self._alarm.attach()
        observer.start()
        self._observer = observer
        self._next_scan = self.clock()  # the start scan runs on the first tick
        self._thread = threading.Thread(target=self._run, name="reka-ingest-watcher", daemon=True)
        self._thread.start()
        log.info(
            "watcher.started",
            inbox=self.root,
            observer=self.settings.observer.value,
            recovered=self.stats.recovered,
            adopted=self.stats.adopted,
        )

    def request_stop(self) -> None:
        """Ask `run_forever` to return (safe to call from a signal handler)."""
        self._stop_requested.set()

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """Stop observing, record what is in hand, close the open batch, join the thread."""
        self._stop_requested.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout)
            self._observer = None
        self._alarm.detach()
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("watcher.stop_timeout", seconds=timeout)
            self._thread = None
        log.info(
            "watcher.stopped",
            claimed=self.stats.claimed,
            recorded=self.recorder.totals.recorded,
            batches=self.batcher.batches_created,
        )

    def run_forever(self) -> None:
        """Start, run until `request_stop()` (or the processing thread dies), stop."""
        self.start()
        try:
            while not self._stop_requested.wait(MAX_TICK_SECONDS):
                if self._thread is None or not self._thread.is_alive():
                    log.error("watcher.thread_died")
                    break
        finally:
            self.stop()

    # --- the processing thread ----------------------------------------------------------

    def _run(self) -> None:
        while not self._halt.is_set():
            try:
                self._tick()
            except Exception:  # log, pause, carry on: scans and recovery catch up
                log.exception("watcher.tick_failed")
                self._halt.wait(MAX_TICK_SECONDS)
        try:
            self.recorder.flush()
            self.batcher.flush()
        except Exception:  # at stop: recovery at the next start finishes the job
            log.exception("watcher.final_flush_failed")

    def _tick(self) -> None:
        self._drain(self._wait_time())
        self._folders_ok.clear()
        self.defaults.new_look()
        now = self.clock()
        if self._overflowed.is_set() and now - self._last_scan >= OVERFLOW_SCAN_MIN_GAP:
            self._overflowed.clear()
            self.stats.overflows += 1
            log.warning("watcher.events_lost", action="scanning now")
            self._next_scan = now
        if now >= self._next_scan:
            self._scan()
            self._last_scan = self.clock()
            self._next_scan = self._last_scan + self.settings.scan_interval
        for path in self.tracker.due(MAX_CHECKS_PER_TICK):
            self._look(path)
        self.recorder.flush()
        self.batcher.poll()

    def _wait_time(self) -> float:
        now = self.clock()
        wake = [now + MAX_TICK_SECONDS, self._next_scan]
        for moment in (self.tracker.next_due(), self.batcher.deadline()):
            if moment is not None:
                wake.append(moment)
        return max(0.0, min(wake) - now)

    def _drain(self, timeout: float) -> None:
        """Take events off the queue: wait up to `timeout` for the first, then the rest."""
        try:
            item = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            return
        taken = 0
        while True:
            kind, path = item
            taken += 1
            if path not in self._refused:
                if kind is Kind.CLOSED:
                    self.tracker.closed(path, ORIGIN_EVENT)
                elif kind is Kind.MOVED:
                    self.tracker.moved(path, ORIGIN_EVENT)
                else:
                    self.tracker.seen(path, ORIGIN_EVENT)
            if taken >= MAX_EVENTS_PER_TICK:
                break
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
        self.stats.events += taken

    def _scan(self) -> None:
        """Walk the inbox; track every file no event reported (and count those)."""
        self._drain(0)
        first = self.stats.scans == 0
        missed = 0
        sidecars: list[str] = []
        for entry in walk(self.root, sidecars):
            path = entry.path
            if path in self.tracker or path in self._refused:
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            self.tracker.seen(path, ORIGIN_SCAN, (st.st_size, st.st_mtime_ns))
            missed += 1
        self.stats.scans += 1
        self.stats.scan_found_missed += missed
        # Claim folders left empty (workers remove most; not one still open here).
        prune_claim_folders(self.work_dir, self.tag, keep=self.claims.open_paths())
        log.info(
            "watcher.scan_found_missed", count=missed, start_scan=first, tracked=len(self.tracker)
        )
        self._check_sidecars(sidecars)

    def _check_sidecars(self, found: list[str]) -> None:
        """Sidecars still in the inbox at this scan: one first seen `orphan_sidecar_after`
        ago with no image beside it to take it is recorded failed on its own.

        An image takes its sidecar along when it is claimed, so a sidecar that stays
        has no image yet. Scans are the clock: the bound is kept within one
        `scan_interval`.
        """
        now = self.clock()
        before = self._sidecars
        self._sidecars = {p: before.get(p, now) for p in found if p not in self._refused}
        limit = self.settings.orphan_sidecar_after
        due = [(p, t) for p, t in self._sidecars.items() if now - t >= limit]
        for path, since in due:
            if self._has_image(path):
                continue
            del self._sidecars[path]
            self._orphan(path, since, limit)

    def _has_image(self, sidecar: str) -> bool:
        """Whether an image that would take this sidecar (see `candidates`) is beside it."""
        folder, name = os.path.split(sidecar)
        stem = name[: -len(".json")]
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    other = entry.name
                    if other == name or entry.path in self._refused:
                        continue
                    owns = other == stem or os.path.splitext(other)[0] == stem
                    if owns and not other.lower().endswith(".json"):
                        return True
        except OSError:
            return False
        return False

    def _orphan(self, path: str, since: float, limit: float) -> None:
        message = (
            f"no image arrived for this sidecar within {limit:.0f} s (INGEST_ORPHAN_SIDECAR_AFTER)"
        )
        try:
            st = os.lstat(path)
        except OSError:
            return
        work_path = path
        if stat.S_ISREG(st.st_mode):
            try:
                claimed = claim(path, rel_path=self._rel(path), folders=self.claims)
            except OSError as err:
                log.warning("watcher.claim_failed", path=path, error=err.strerror)
                return
            if claimed is None:
                return
            work_path = claimed.work_path
        else:
            self._refused.add(path)  # a link or other odd entry: recorded in place, never followed
        self.stats.orphan_sidecars += 1
        waited = round(self.clock() - since)
        log.warning("watcher.orphan_sidecar", path=self._rel(path), waited=waited)
        self.recorder.add(
            self._failed(
                path,
                work_path=work_path,
                origin=ORIGIN_SCAN,
                seen_at=since,
                reason=Reason.ORPHAN_SIDECAR,
                message=message,
            )
        )

    def _look(self, path: str) -> None:
        """Stat one due path and act on the tracker's verdict."""
        origin, seen_at = self.tracker.origin(path), self.tracker.first_seen(path)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            self.tracker.check(path, None)
            return
        except OSError as err:
            self.tracker.forget(path)
            log.warning("watcher.stat_failed", path=path, error=err.strerror)
            return
        if stat.S_ISDIR(st.st_mode):
            self.tracker.forget(path)  # a folder named like an image: its files come on their own
            return
        if not stat.S_ISREG(st.st_mode):
            self.tracker.forget(path)
            what = "symbolic links are never followed" if stat.S_ISLNK(st.st_mode) else None
            self._refuse(path, origin, seen_at, what or "not a regular file")
            return
        verdict = self.tracker.check(path, (st.st_size, st.st_mtime_ns))
        if verdict is Verdict.WHOLE:
            self._take(path, origin, seen_at, never_stable=False)
        elif verdict is Verdict.NEVER_STABLE:
            self._take(path, origin, seen_at, never_stable=True)

    def _rel(self, path: str) -> str:
        return path[len(self.root) + 1 :]

    def _folder_ok(self, folder: str) -> bool:
        """No symbolic link between the inbox and this folder (cached for one tick)."""
        ok = self._folders_ok.get(folder)
        if ok is None:
            ok = folder == self.root or os.path.realpath(folder) == folder
            self._folders_ok[folder] = ok
        return ok

    def _refuse(self, path: str, origin: str, seen_at: float, message: str) -> None:
        """Record a path we will not take, in place (it is never moved or followed)."""
        self._refused.add(path)
        self.stats.refused += 1
        self.recorder.add(
            self._failed(
                path,
                work_path=path,
                origin=origin,
                seen_at=seen_at,
                reason=Reason.REFUSED_PATH,
                message=message,
            )
        )

    def _failed(
        self,
        path: str,
        *,
        work_path: str,
        origin: str,
        seen_at: float,
        reason: Reason,
        message: str,
    ) -> NewFile:
        return NewFile(
            path=self._rel(path),
            source_root=self.root,
            work_path=work_path,
            origin=origin,
            size=0,
            mtime=0.0,
            sha256=None,
            seen_at=seen_at,
            reason=reason,
            message=message,
        )

    def _take(self, path: str, origin: str, seen_at: float, *, never_stable: bool) -> None:
        """Claim a whole (or given-up) file and hand it to the recorder."""
        if not self._folder_ok(os.path.dirname(path)):
            self._refuse(path, origin, seen_at, "a folder on its path is a symbolic link")
            return
        side = find_sidecar(path)
        if side is not None and not never_stable and self._young(side):
            self.stats.deferred += 1
            self.tracker.seen(path, origin)  # its sidecar is still being written
            return
        try:
            claimed = claim(path, rel_path=self._rel(path), folders=self.claims, sidecar=side)
        except OSError as err:
            log.warning("watcher.claim_failed", path=path, error=err.strerror)
            return
        if claimed is None:
            self.stats.lost_races += 1
            return
        self.stats.claimed += 1
        if never_stable:
            self.stats.never_stable += 1
            new = self._failed(
                path,
                work_path=claimed.work_path,
                origin=origin,
                seen_at=seen_at,
                reason=Reason.NEVER_STABLE,
                message=f"still changing {self.tracker.give_up_after:.0f} s after first seen",
            )
        else:
            new = describe(
                claimed.work_path,
                rel_path=claimed.rel_path,
                source_root=self.root,
                origin=origin,
                seen_at=seen_at,
                sidecar_path=claimed.sidecar_path,
                defaults=self.defaults,
                max_image_bytes=self.settings.max_image_bytes,
            )
        self.recorder.add(new)

    def _young(self, path: str) -> bool:
        try:
            return self.clock() - os.lstat(path).st_mtime < self.settings.min_file_age
        except OSError:
            return False

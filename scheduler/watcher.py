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

A poison file fails alone: whatever goes wrong while looking at, claiming or
describing one path becomes that path's failed row (`_isolated`), recorded in
place when it was never claimed; the recorder splits a group whose recording
fails (scheduler.recorder). Only the ledger being down stops the loop, and it
is retried with a growing pause. The inbox itself is checked every tick: gone,
it is logged at once; back (or replaced), it is watched again and scanned.

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

from reka_ingest.core.errors import LedgerUnavailable
from reka_ingest.core.logs import get_logger
from reka_ingest.core.settings import IngestSettings, ObserverKind
from reka_ingest.core.states import Origin, Reason
from reka_ingest.core.text import shown
from reka_ingest.files.filters import PathFilter
from reka_ingest.files.manifests import is_manifest
from reka_ingest.ledger import Ledger
from reka_ingest.ledger.intake import NewFile, TakenImage, failed_file, images_owning
from scheduler.batcher import Enqueue, ledger_batchers
from scheduler.claim import (
    Claimed,
    ClaimFolders,
    check_same_filesystem,
    claim,
    inbox_tag,
    prune_claim_folders,
)
from scheduler.constants import (
    MAX_CHECKS_PER_TICK,
    MAX_EVENTS_PER_TICK,
    MAX_FAILED_TICK_PAUSE,
    MAX_TICK_SECONDS,
    OVERFLOW_SCAN_MIN_GAP,
    STOP_TIMEOUT_SECONDS,
)
from scheduler.describe import MetadataRules, describe
from scheduler.events import EVENT_TYPES, InboxHandler, Item, Kind, OverflowAlarm
from scheduler.exclusions import Exclusions
from scheduler.recorder import Recorder
from scheduler.recovery import adopt_unbatched, finish_moves, recover_claims
from scheduler.sidecar import DefaultsReader, find_sidecar
from scheduler.stability import StabilityTracker, Verdict
from scheduler.url_intake import ManifestIntake
from scheduler.walk import walk

log = get_logger(__name__)


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
    isolated: int = 0  # paths that failed alone on an unexpected error
    late_sidecars: int = 0  # sidecars that came after their image was taken
    sidecar_waits: int = 0  # whole images held back for a sidecar that may still come
    unreadable_folders: int = 0
    inbox_returns: int = 0  # the inbox vanished and came back (or was replaced)


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
        # URL rows (image URL lists) batched apart, by count only: a request is one kind.
        self.batcher, self.url_batcher = ledger_batchers(settings, ledger, enqueue, clock)
        self.recorder = Recorder(
            settings, ledger, self.batcher, clock=clock, url_batcher=self.url_batcher
        )
        self.defaults = DefaultsReader(self.root)
        self.manifests = ManifestIntake(
            settings, ledger, self.recorder, root=self.root, defaults=self.defaults, clock=clock
        )
        # INGEST_INCLUDE / INGEST_EXCLUDE: left in place, one `excluded` row each.
        self.exclusions = Exclusions(
            PathFilter.from_settings(settings),
            root=self.root,
            origin=Origin.SCAN,
            add=self.recorder.add,
            clock=clock,
        )
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
        self._inbox_id: tuple[int, int] | None = None  # (st_dev, st_ino) being watched
        self._inbox_gone_since: float | None = None
        self._failures = 0  # ticks failed in a row (the pause grows with them)

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
            rules=MetadataRules.from_settings(self.settings),
            clock=self.clock,
            manifests=self.manifests,
        )
        self.stats.moves_finished = finish_moves(
            self.settings, self.ledger, work_dir=self.work_dir, tag=self.tag, now=self.clock()
        )
        self.stats.adopted = adopt_unbatched(self.ledger, self.batcher, self.url_batcher)
        self.exclusions.start(self.ledger, self.root)  # before the start scan
        self._alarm.attach()
        self._observe()
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

    def _observe(self) -> None:
        """Start observing the inbox as it is now (again, after it came back)."""
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(STOP_TIMEOUT_SECONDS)
            self._observer = None
        st = os.stat(self.root)
        self._inbox_id = (st.st_dev, st.st_ino)
        observer: BaseObserver = (
            PollingObserver(timeout=self.settings.polling_interval)
            if self.settings.observer is ObserverKind.POLLING
            else _native_observer(self._handler)
        )
        observer.schedule(self._handler, self.root, recursive=True, event_filter=EVENT_TYPES)
        observer.start()
        self._observer = observer

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
                self._failures = 0
            except LedgerUnavailable as err:  # an outage: wait for it, do not spin
                self._failures += 1
                if Ledger.is_conflict(err):  # it answers; a concurrent write was in the way
                    log.warning("watcher.ledger_conflict", error=str(err), failures=self._failures)
                else:
                    log.error("watcher.ledger_unavailable", error=str(err), failures=self._failures)
                self._halt.wait(self._pause())
            except Exception:  # log, pause, carry on: scans and recovery catch up
                self._failures += 1
                log.exception("watcher.tick_failed", failures=self._failures)
                self._halt.wait(self._pause())
        try:
            self.recorder.flush()
            self.batcher.flush()
            self.url_batcher.flush()
        except Exception:  # at stop: recovery at the next start finishes the job
            log.exception("watcher.final_flush_failed")

    def _pause(self) -> float:
        """After a failed tick: a short pause, doubling while ticks keep failing."""
        doubling = float(2 ** min(self._failures, 10))
        return min(MAX_TICK_SECONDS * doubling, MAX_FAILED_TICK_PAUSE)

    def _tick(self) -> None:
        self._check_inbox()
        self._drain(self._wait_time())
        self._folders_ok.clear()
        self.defaults.new_look()
        now = self.clock()
        if self._overflowed.is_set() and now - self._last_scan >= OVERFLOW_SCAN_MIN_GAP:
            self._overflowed.clear()
            self.stats.overflows += 1
            log.warning("watcher.events_lost", action="scanning now")
            self._next_scan = now
        if now >= self._next_scan and self._inbox_gone_since is None:
            self._scan()
            self._last_scan = self.clock()
            self._next_scan = self._last_scan + self.settings.scan_interval
        due = self.tracker.due(MAX_CHECKS_PER_TICK)
        for i, path in enumerate(due):
            try:
                self._look_alone(path)
            except LedgerUnavailable:
                self._give_back(due[i + 1 :])  # not looked at: tracked again, not dropped
                raise  # the recorder keeps its group: not this file's fault
        self.manifests.step()
        self.recorder.flush()
        self.batcher.poll()
        self.url_batcher.poll()

    def _look_alone(self, path: str) -> None:
        """Look at one due path; an unexpected error is that path's outcome alone.
        `LedgerUnavailable` (from the recorder, whatever step met the outage) is
        raised: the file waits in the recorder's group, nothing is isolated."""
        try:
            self._look(path)
        except LedgerUnavailable:
            raise
        except Exception as err:  # noqa: BLE001 - one path's failure is that path's outcome
            self._isolated(path, err)

    def _give_back(self, paths: list[str]) -> None:
        """Paths `due()` handed out that an outage kept from being looked at: tracked
        anew (the tracker owns a due path until it is checked or forgotten)."""
        for path in paths:
            if path in self.tracker:
                origin = self.tracker.origin(path)
                self.tracker.forget(path)
                self.tracker.seen(path, origin)

    def _check_inbox(self) -> None:
        """Notice at once when the inbox vanishes, and when it is back (or replaced)."""
        try:
            st = os.stat(self.root)
        except OSError as err:
            if self._inbox_gone_since is None:
                self._inbox_gone_since = self.clock()
                log.error("watcher.inbox_missing", inbox=self.root, error=err.strerror)
            return
        if self._inbox_gone_since is None and (st.st_dev, st.st_ino) == self._inbox_id:
            return
        gone_for = None if self._inbox_gone_since is None else self.clock() - self._inbox_gone_since
        self._inbox_gone_since = None
        self.stats.inbox_returns += 1
        log.warning(
            "watcher.inbox_back",
            inbox=self.root,
            gone_seconds=None if gone_for is None else round(gone_for, 1),
            action="watching it again and scanning now",
        )
        self._observe()
        self._next_scan = self.clock()

    def _wait_time(self) -> float:
        now = self.clock()
        wake = [now + MAX_TICK_SECONDS, self._next_scan]
        if self.manifests:
            return 0.0  # a URL list is being read: the next slice at once
        for moment in (
            self.tracker.next_due(),
            self.batcher.deadline(),
            self.url_batcher.deadline(),
        ):
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
            if path not in self._refused and not self.exclusions.file(path, Origin.EVENT):
                if kind is Kind.CLOSED:
                    self.tracker.closed(path, Origin.EVENT)
                elif kind is Kind.MOVED:
                    self.tracker.moved(path, Origin.EVENT)
                else:
                    self.tracker.seen(path, Origin.EVENT)
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
        unreadable: list[tuple[str, str]] = []
        for entry in walk(self.root, sidecars, unreadable, prune=self.exclusions.folder):
            path = entry.path
            if path in self.tracker or path in self._refused or self.exclusions.file(path):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            self.tracker.seen(path, Origin.SCAN, (st.st_size, st.st_mtime_ns))
            missed += 1
        self.stats.scans += 1
        self.stats.scan_found_missed += missed
        # Claim folders left empty (workers remove most; not one still open here).
        prune_claim_folders(self.work_dir, self.tag, keep=self.claims.open_paths())
        log.info(
            "watcher.scan_found_missed", count=missed, start_scan=first, tracked=len(self.tracker)
        )
        self._check_sidecars(sidecars)
        for folder, error in unreadable:
            self._unreadable_folder(folder, error)

    def _unreadable_folder(self, folder: str, error: str) -> None:
        """A folder the scan cannot list: one failed row says so (its files come in
        once it can be read); the inbox itself is only logged."""
        if folder == self.root:
            log.error("watcher.inbox_unreadable", inbox=self.root, error=error)
            return
        if folder in self._refused:
            return
        self._refused.add(folder)
        self.stats.unreadable_folders += 1
        log.warning("watcher.unreadable_folder", folder=self._rel(folder), error=error)
        self.recorder.add(
            self._failed(
                folder,
                work_path=folder,
                origin=Origin.SCAN,
                seen_at=self.clock(),
                reason=Reason.UNREADABLE,
                message=f"cannot list this folder: {error}; its files come in once it can be read",
                rel=self._rel(folder) + os.sep,
            )
        )

    def _check_sidecars(self, found: list[str]) -> None:
        """Sidecars still in the inbox at this scan, with no image beside them to take
        them: one whose image the ledger shows taken already fails as `late_sidecar`
        (at once when that was shortly before it came), one first seen
        `orphan_sidecar_after` ago with no image at all as `orphan_sidecar`, and one that
        is no file (a FIFO, a socket, a device: no image takes it) at once as `refused_path`.

        An image takes its sidecar along when it is claimed, so a sidecar that stays
        has no image yet. Scans are the clock: the bound is kept within one
        `scan_interval`; a new sidecar is looked up in the ledger once, at the
        scan that finds it.
        """
        now = self.clock()
        before = self._sidecars
        self._sidecars = {
            p: before.get(p, now)
            for p in found
            if p not in self._refused and not self.exclusions.sidecar(p)  # stays with its image
        }
        limit = self.settings.orphan_sidecar_after
        for path, since in list(self._sidecars.items()):
            new, due = path not in before, now - since >= limit
            if not (new or due):
                continue
            try:
                if new and self._not_a_file(path):
                    del self._sidecars[path]
                    self._fail_sidecar(
                        path,
                        since,
                        Reason.REFUSED_PATH,
                        "not a regular file: no image takes it as its sidecar",
                    )
                    continue
                if self._has_image(path):
                    continue
                owners = images_owning(
                    self.ledger, source_root=self.root, sidecar_rel=shown(self._rel(path))
                )
                # Its image taken shortly before it came: late now. One taken long
                # before may be an older drop of that name (a writer that saves the
                # sidecar first is still to send the image): late only at the bound.
                if owners and (due or owners[0].taken_at >= since - limit):
                    del self._sidecars[path]
                    self._late(path, since, owners[0])
                elif due:
                    del self._sidecars[path]
                    self._orphan(path, since, limit)
            except LedgerUnavailable:
                raise
            except Exception as err:  # noqa: BLE001 - one sidecar's failure is its own outcome
                self._sidecars.pop(path, None)
                self._isolated(path, err)

    @staticmethod
    def _not_a_file(path: str) -> bool:
        """A sidecar's name on something no image takes along (`find_sidecar`: a FIFO,
        a socket, a device); a symbolic link is taken, and refused when read."""
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            return False  # gone: nothing to record
        return not (stat.S_ISREG(mode) or stat.S_ISLNK(mode))

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
        self.stats.orphan_sidecars += 1
        log.warning(
            "watcher.orphan_sidecar", path=self._rel(path), waited=round(self.clock() - since)
        )
        self._fail_sidecar(
            path,
            since,
            Reason.ORPHAN_SIDECAR,
            f"no image arrived for this sidecar within {limit:.0f} s (INGEST_ORPHAN_SIDECAR_AFTER)",
        )

    def _late(self, path: str, since: float, owner: TakenImage) -> None:
        self.stats.late_sidecars += 1
        uploaded = (
            f"uploaded as image_id {owner.image_id}"
            if owner.image_id
            else f"not uploaded yet, state {owner.state}"
        )
        message = (
            f"this sidecar came after its image {owner.path} was taken at "
            f"{_iso(owner.taken_at)} (file {owner.file_id}, {uploaded}), so the image went "
            "without it; to send this metadata, drop the image again with the sidecar beside "
            "it, or make INGEST_SIDECAR_WAIT longer than the writer's gap between the two"
        )
        log.warning("watcher.late_sidecar", path=self._rel(path), image_file_id=owner.file_id)
        self._fail_sidecar(path, since, Reason.LATE_SIDECAR, message)

    def _fail_sidecar(self, path: str, since: float, reason: Reason, message: str) -> None:
        """Claim a sidecar no image will take and record it failed on its own."""
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
        self.recorder.add(
            self._failed(
                path,
                work_path=work_path,
                origin=Origin.SCAN,
                seen_at=since,
                reason=reason,
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
            self._refuse(
                path, origin, seen_at, f"cannot look at it: {err.strerror}", Reason.UNREADABLE
            )
            return
        if stat.S_ISDIR(st.st_mode):
            self.tracker.forget(path)  # a folder named like an image: its files come on their own
            return
        if not stat.S_ISREG(st.st_mode):
            self.tracker.forget(path)
            what = "symbolic links are never followed" if stat.S_ISLNK(st.st_mode) else None
            self._refuse(path, origin, seen_at, what or "not a regular file")
            return
        sig = (st.st_size, st.st_mtime_ns)
        verdict = self.tracker.check(path, sig)
        if verdict is Verdict.WHOLE:
            if not is_manifest(path) and self._wait_for_sidecar(path, origin, seen_at, st):
                return
            self._take(path, origin, seen_at, never_stable=False)
        elif verdict is Verdict.NEVER_STABLE:
            self._take(path, origin, seen_at, never_stable=True)

    def _wait_for_sidecar(
        self, path: str, origin: Origin, seen_at: float, st: os.stat_result
    ) -> bool:
        """Hold a whole image with no sidecar beside it until INGEST_SIDECAR_WAIT has
        passed since it last changed (writers often save the metadata second)."""
        # ctime: when the file last changed here (a write, a rename in). Unlike
        # mtime it cannot be set, so a file dated in the future does not wait long.
        now, wait = self.clock(), self.settings.sidecar_wait
        until = min(st.st_ctime, now) + wait
        if until <= now or find_sidecar(path) is not None:
            return False
        self.stats.sidecar_waits += 1
        self.tracker.defer(path, origin, seen_at, (st.st_size, st.st_mtime_ns), until)
        return True

    def _isolated(self, path: str, err: BaseException) -> None:
        """An unexpected error on one path: that path fails alone, recorded in place
        (it was not claimed: a claimed file's errors are `describe`'s to record)."""
        origin = self.tracker.origin(path) if path in self.tracker else Origin.SCAN
        self.tracker.forget(path)
        self.stats.isolated += 1
        log.error(
            "watcher.path_isolated",
            path=self._rel(path),
            error=f"{type(err).__name__}: {err}",
            exc_info=err,
        )
        if path in self._refused or not os.path.lexists(path):
            return
        self._refuse(
            path,
            origin,
            self.clock(),
            f"the watcher failed on this file: {type(err).__name__}: {err}",
            Reason.INTAKE_FAILED,
        )

    def _rel(self, path: str) -> str:
        return path[len(self.root) + 1 :]

    def _folder_ok(self, folder: str) -> bool:
        """No symbolic link between the inbox and this folder (cached for one tick)."""
        ok = self._folders_ok.get(folder)
        if ok is None:
            ok = folder == self.root or os.path.realpath(folder) == folder
            self._folders_ok[folder] = ok
        return ok

    def _refuse(
        self,
        path: str,
        origin: Origin,
        seen_at: float,
        message: str,
        reason: Reason = Reason.REFUSED_PATH,
    ) -> None:
        """Record a path we will not take, in place (it is never moved or followed)."""
        self._refused.add(path)
        self.stats.refused += 1
        self.recorder.add(
            self._failed(
                path,
                work_path=path,
                origin=origin,
                seen_at=seen_at,
                reason=reason,
                message=message,
            )
        )

    def _failed(
        self,
        path: str,
        *,
        work_path: str,
        origin: Origin,
        seen_at: float,
        reason: Reason,
        message: str,
        rel: str | None = None,
    ) -> NewFile:
        return failed_file(
            path=self._rel(path) if rel is None else rel,
            source_root=self.root,
            work_path=work_path,
            origin=origin,
            seen_at=seen_at,
            reason=reason,
            message=message,
        )

    def _take(self, path: str, origin: Origin, seen_at: float, *, never_stable: bool) -> None:
        """Claim a whole (or given-up) file and hand it to the recorder."""
        if not self._folder_ok(os.path.dirname(path)):
            self._refuse(path, origin, seen_at, "a folder on its path is a symbolic link")
            return
        side = None if is_manifest(path) else find_sidecar(path)
        if side is not None and not never_stable and self._young(side):
            self.stats.deferred += 1
            self.tracker.seen(path, origin)  # its sidecar is still being written
            return
        try:
            claimed = claim(path, rel_path=self._rel(path), folders=self.claims, sidecar=side)
        except OSError as err:
            log.warning("watcher.claim_failed", path=self._rel(path), error=err.strerror)
            self._refuse(
                path,
                origin,
                seen_at,
                f"cannot be moved into the work area to be claimed: {err.strerror}",
                Reason.INTAKE_FAILED,
            )
            return
        if claimed is None:
            self.stats.lost_races += 1
            return
        self.stats.claimed += 1
        if not never_stable and is_manifest(claimed.rel_path):
            self.manifests.start(claimed.work_path, claimed.rel_path, origin, seen_at)
            return
        try:
            new = self._describe(claimed, origin, seen_at, never_stable=never_stable)
        except Exception as err:  # noqa: BLE001 - claimed: it fails alone, from work/
            new = self._failed(
                path,
                work_path=claimed.work_path,
                origin=origin,
                seen_at=seen_at,
                reason=Reason.INTAKE_FAILED,
                message=f"the watcher failed on this file: {type(err).__name__}: {err}",
            )
        self.recorder.add(new)

    def _describe(
        self, claimed: Claimed, origin: Origin, seen_at: float, *, never_stable: bool
    ) -> NewFile:
        path = os.path.join(self.root, claimed.rel_path)
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
                rules=MetadataRules.from_settings(self.settings),
            )
        return new

    def _young(self, path: str) -> bool:
        try:
            return self.clock() - os.lstat(path).st_mtime < self.settings.min_file_age
        except OSError:
            return False


def _iso(moment: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))

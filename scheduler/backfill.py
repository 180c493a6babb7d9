"""A one-shot backfill of an existing tree: every file recorded in place.

Nothing is claimed or moved: `work_path` is the file's own absolute path and
the origin is `backfill`; the outbox leaves such files where they are and only
writes reason files for the failed ones. `work_path` is unique in the ledger,
so a second run over the same tree records nothing twice (known paths are
skipped before they are hashed). Files that changed in the last
`min_file_age` seconds are skipped as still being written; run again later.

An image URL list (`*.urls`, `*.urls.csv`) is read where it lies, one row per
line as in the inbox (`scheduler.url_intake`); it is never moved, and a list
with bad lines gets its reason file in failed/.

The tree must not overlap the inbox or the service's own folders: the watcher
takes files from the one, the worker moves files in the others.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path

from reka_ingest.core.logs import get_logger
from reka_ingest.core.settings import IngestSettings
from reka_ingest.core.states import Origin, Reason
from reka_ingest.core.text import shown
from reka_ingest.files.filters import PathFilter
from reka_ingest.files.manifests import is_manifest
from reka_ingest.ledger import Ledger
from reka_ingest.ledger.intake import NewFile, failed_file, known_work_paths
from scheduler.batcher import Enqueue, ledger_batchers
from scheduler.claim import overlapping, own_folders
from scheduler.constants import RECORD_GROUP_SIZE
from scheduler.describe import MetadataRules, describe
from scheduler.exclusions import Exclusions
from scheduler.recorder import Recorder
from scheduler.sidecar import DefaultsReader, find_sidecar
from scheduler.url_intake import ManifestIntake
from scheduler.walk import walk

log = get_logger(__name__)


@dataclass(slots=True)
class BackfillSummary:
    found: int = 0  # candidate files under the root
    recorded: int = 0  # new rows
    queued: int = 0  # of which waiting for upload
    duplicates: int = 0
    failed: int = 0
    already_known: int = 0  # recorded by an earlier run
    too_new: int = 0  # changed in the last min_file_age seconds: skipped
    excluded: int = 0  # left in place by INGEST_INCLUDE / INGEST_EXCLUDE (new rows)
    url_lists: int = 0  # image URL lists read where they lie (their lines are rows)
    batches: int = 0
    enqueue_failures: int = 0


def refusal(settings: IngestSettings, root: Path) -> str | None:
    """Why `root` cannot be backfilled (None when it can)."""
    real = Path(os.path.realpath(root))
    if not real.is_dir():
        return f"{root} is not a folder"
    hit = overlapping(real, {"INGEST_INBOX": settings.inbox, **own_folders(settings)})
    if hit is not None:
        name, folder = hit
        return f"{root} overlaps {name} ({folder}); backfill a tree the service does not own"
    return None


def count_files(root: Path, path_filter: PathFilter | None = None) -> int:
    """How many candidate files a backfill of `root` will look at (for a progress bar);
    with the filter, not those in folders it leaves out whole."""
    top = os.path.realpath(root)
    if path_filter is None or not path_filter.prunes:
        return sum(1 for _ in walk(top))

    def pruned(folder: str) -> bool:
        return path_filter.pruned_by(folder[len(top) + 1 :]) is not None

    return sum(1 for _ in walk(top, prune=pruned))


def _chunks(entries: Iterator[os.DirEntry[str]], size: int) -> Iterator[list[os.DirEntry[str]]]:
    while chunk := list(islice(entries, size)):
        yield chunk


def backfill(
    settings: IngestSettings,
    ledger: Ledger,
    root: Path,
    enqueue: Enqueue,
    *,
    clock: Callable[[], float] = time.time,
    progress: Callable[[int], None] | None = None,
    group_size: int = RECORD_GROUP_SIZE,
) -> BackfillSummary:
    """Record every file under `root` in place, batch the new ones, enqueue the batches."""
    problem = refusal(settings, root)
    if problem is not None:
        raise ValueError(problem)
    top = os.path.realpath(root)
    batcher, url_batcher = ledger_batchers(settings, ledger, enqueue, clock)
    recorder = Recorder(
        settings, ledger, batcher, clock=clock, group_size=group_size, url_batcher=url_batcher
    )
    defaults = DefaultsReader(top)
    manifests = ManifestIntake(settings, ledger, recorder, root=top, defaults=defaults, clock=clock)
    summary = BackfillSummary()
    unreadable: list[tuple[str, str]] = []
    exclusions = Exclusions(
        PathFilter.from_settings(settings),
        root=top,
        origin=Origin.BACKFILL,
        add=recorder.add,
        clock=clock,
    )
    exclusions.start(ledger)  # rows the rules take now are forgotten, then taken below
    for chunk in _chunks(walk(top, None, unreadable, prune=exclusions.folder), group_size):
        summary.found += len(chunk)
        known = known_work_paths(ledger, [e.path for e in chunk])
        summary.already_known += len(known)
        for entry in chunk:
            if entry.path in known or exclusions.file(entry.path):
                continue
            if is_manifest(entry.name) and _take_list(entry, top, settings, manifests, clock):
                summary.url_lists += 1
                continue
            new = _describe(entry, top, settings, defaults, clock)
            if new is None:
                summary.too_new += 1
                continue
            recorder.add(new)
        recorder.flush()
        batcher.poll()
        url_batcher.poll()
        if progress is not None:
            progress(len(chunk))
    for folder, error in unreadable:  # on record, not only in a log line
        recorder.add(_unreadable(folder, top, error, clock()))
    recorder.flush()
    batcher.flush()
    url_batcher.flush()
    totals = recorder.totals
    summary.recorded, summary.queued = totals.recorded, totals.queued
    summary.duplicates, summary.failed = totals.duplicates, totals.failed
    summary.excluded = totals.excluded
    summary.already_known += totals.skipped + totals.resumed  # resumed: batched or moved now
    summary.batches = batcher.batches_created + url_batcher.batches_created
    summary.enqueue_failures = batcher.enqueue_failures + url_batcher.enqueue_failures
    log.info("backfill.done", root=top, **asdict(summary))
    return summary


def _take_list(
    entry: os.DirEntry[str],
    top: str,
    settings: IngestSettings,
    manifests: ManifestIntake,
    clock: Callable[[], float],
) -> bool:
    """Read an image URL list where it lies, every line to a row (True); False when
    it is to be described as a file instead (too new, a link, an odd name: the
    file path records why)."""
    try:
        st = entry.stat(follow_symlinks=False)
    except OSError:
        return False
    now = clock()
    if not stat.S_ISREG(st.st_mode) or now - st.st_mtime < settings.min_file_age:
        return False
    if _refusal(entry.path, st) is not None:
        return False
    manifests.start(entry.path, os.path.relpath(entry.path, top), Origin.BACKFILL, now)
    while manifests:
        manifests.step()
    return True


def _unreadable(folder: str, top: str, error: str, now: float) -> NewFile:
    rel = "." if folder == top else os.path.relpath(folder, top)
    return failed_file(
        path=rel + os.sep,
        source_root=top,
        work_path=folder,
        origin=Origin.BACKFILL,
        seen_at=now,
        reason=Reason.UNREADABLE,
        message=f"cannot list this folder: {error}; its files were not taken",
    )


def _refusal(path: str, st: os.stat_result | None) -> str | None:
    """Why a backfill will not take the entry at `path` where it is, if it will not."""
    if st is not None and not stat.S_ISREG(st.st_mode):
        link = stat.S_ISLNK(st.st_mode)
        return "symbolic links are never followed" if link else "not a regular file"
    if shown(path) != path:
        return (
            "its path has bytes that are not UTF-8 (shown as %XX); a backfill reads "
            "files where they are and cannot name this one to the worker: rename it, "
            "or drop it into the watched inbox, which takes any name"
        )
    return None


def _describe(
    entry: os.DirEntry[str],
    top: str,
    settings: IngestSettings,
    defaults: DefaultsReader,
    clock: Callable[[], float],
) -> NewFile | None:
    """The NewFile for one entry, or None when it is too new to take."""
    rel_path = os.path.relpath(entry.path, top)
    now = clock()
    try:
        st = entry.stat(follow_symlinks=False)
    except OSError:
        st = None
    if st is not None and now - st.st_mtime < settings.min_file_age and stat.S_ISREG(st.st_mode):
        return None
    refusal = _refusal(entry.path, st)
    if refusal is not None:
        return failed_file(
            path=rel_path,
            source_root=top,
            work_path=entry.path,
            origin=Origin.BACKFILL,
            seen_at=now,
            reason=Reason.REFUSED_PATH,
            message=refusal,
        )
    return describe(
        entry.path,
        rel_path=rel_path,
        source_root=top,
        origin=Origin.BACKFILL,
        seen_at=now,
        sidecar_path=find_sidecar(entry.path),
        defaults=defaults,
        max_image_bytes=settings.max_image_bytes,
        rules=MetadataRules.from_settings(settings),
    )

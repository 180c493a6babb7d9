"""A dry run: what taking a tree (or an image URL list) in would do, and how long it takes.

`plan` walks the tree the way the watcher and `scan` would and runs each file
through the same decisions, without claiming, recording, moving or sending
anything: the include/exclude filters, the intake's description (size limit,
sidecar and folder metadata, sha256), the worker's image check, and duplicate
detection by content against the ledger's live originals and against the
files seen earlier in the same walk. Image URL lists (`*.urls`,
`*.urls.csv`) are read line by line the same way. Uploads are packed into
requests by the real `Batcher` under the configured limits, and the request
count is turned into time at the configured daily quota.

Memory stays flat however large the tree: the walk keeps a stack of folders,
counts are counters, only a few example paths per failure reason are kept,
and the hashes already seen live in a temporary SQLite table on disk, not in
a set.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reka_ingest.core.errors import FileRejected
from reka_ingest.core.settings import IngestSettings
from reka_ingest.core.states import Origin, Reason
from reka_ingest.core.text import shown
from reka_ingest.files.convert import is_convertible
from reka_ingest.files.filters import PathFilter
from reka_ingest.files.manifests import ManifestLine, is_manifest, read_manifest, url_identity
from reka_ingest.files.validate import check_image
from reka_ingest.ledger import Ledger
from reka_ingest.ledger.queries import hashes_with_originals
from scheduler.batcher import Batcher, BatchLimits
from scheduler.describe import MetadataRules, describe
from scheduler.sidecar import DefaultsReader, find_sidecar
from scheduler.walk import walk

# How many example paths a failure reason keeps (the report shows them).
EXAMPLES_PER_REASON = 3
# Files described before their hashes are looked up in the ledger together.
_LOOKUP_CHUNK = 500
_SECONDS_PER_DAY = 86_400.0


@dataclass(slots=True)
class UploadCount:
    """What would go up: images (files) or image URLs."""

    items: int = 0
    bytes: int = 0
    requests: int = 0


@dataclass(slots=True)
class PlanReport:
    """What taking `root` in would do; `to_json` is `plan --json`."""

    root: str
    files: int = 0  # every candidate file found (manifests and excluded files included)
    kinds: Counter[str] = field(default_factory=Counter)  # content type (or "manifest", "other")
    files_up: UploadCount = field(default_factory=UploadCount)
    urls_up: UploadCount = field(default_factory=UploadCount)
    converted: int = 0  # HEIC/HEIF or AVIF that would be sent as JPEG
    duplicates_of_uploaded: int = 0  # bytes (or URLs) the ledger already has
    duplicates_within: int = 0  # bytes (or URLs) seen earlier in this walk
    failures: Counter[str] = field(default_factory=Counter)  # reason -> count
    examples: dict[str, list[str]] = field(default_factory=dict)  # reason -> first few paths
    excluded: int = 0
    manifests: int = 0
    url_lines: int = 0
    uploads_per_day: int = 0
    seconds: float = 0.0

    @property
    def requests(self) -> int:
        return self.files_up.requests + self.urls_up.requests

    @property
    def would_upload(self) -> int:
        return self.files_up.items + self.urls_up.items

    @property
    def duplicates(self) -> int:
        return self.duplicates_of_uploaded + self.duplicates_within

    @property
    def would_fail(self) -> int:
        return sum(self.failures.values())

    @property
    def days_at_quota(self) -> float | None:
        """Days the requests take at INGEST_UPLOADS_PER_DAY (None: no daily quota)."""
        if self.uploads_per_day <= 0:
            return None
        return self.requests / self.uploads_per_day

    def fail(self, reason: str, path: str) -> None:
        self.failures[reason] += 1
        examples = self.examples.setdefault(reason, [])
        if len(examples) < EXAMPLES_PER_REASON:
            examples.append(shown(path))

    def headline(self) -> str:
        """`23,410 images in 235 requests: 2.4 days at 100 requests a day`."""
        what = f"{self.would_upload:,} images in {self.requests:,} requests"
        days = self.days_at_quota
        if days is None:
            return f"{what}: no daily quota (INGEST_UPLOADS_PER_DAY=0)"
        per_day = f"{self.uploads_per_day:,} request{'s' if self.uploads_per_day != 1 else ''}"
        return f"{what}: {_days(days)} at {per_day} a day"

    def to_json(self) -> dict[str, Any]:
        return {
            "root": shown(self.root),
            "files": self.files,
            "kinds": dict(sorted(self.kinds.items())),
            "would_upload": {
                "images": self.files_up.items,
                "bytes": self.files_up.bytes,
                "converted_to_jpeg": self.converted,
                "urls": self.urls_up.items,
            },
            "duplicates": {
                "of_uploaded": self.duplicates_of_uploaded,
                "within_plan": self.duplicates_within,
            },
            "would_fail": dict(sorted(self.failures.items())),
            "fail_examples": {k: self.examples[k] for k in sorted(self.examples)},
            "excluded": self.excluded,
            "manifests": self.manifests,
            "url_lines": self.url_lines,
            "requests": {
                "images": self.files_up.requests,
                "urls": self.urls_up.requests,
                "total": self.requests,
            },
            "quota": {"uploads_per_day": self.uploads_per_day, "days": self.days_at_quota},
            "headline": self.headline(),
            "seconds": round(self.seconds, 3),
        }


def _days(days: float) -> str:
    """A duration in the unit a person plans with: minutes, hours or days."""
    hours = days * 24
    if hours < 1:
        minutes = max(1, round(hours * 60))
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    if days < 1:
        return f"{hours:.1f} hours"
    return f"{days:,.1f} days"


class _SeenHashes:
    """The identities seen earlier in this walk: a table on disk, not a set in memory."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="reka-plan-")
        self._db = sqlite3.connect(os.path.join(self._dir.name, "seen.db"))
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("CREATE TABLE seen (sha256 TEXT PRIMARY KEY) WITHOUT ROWID")

    def first_time(self, sha256: str) -> bool:
        """True the first time this identity is offered."""
        cursor = self._db.execute("INSERT OR IGNORE INTO seen VALUES (?)", (sha256,))
        return cursor.rowcount == 1

    def close(self) -> None:
        """Drop the table (idempotent)."""
        self._db.close()
        self._dir.cleanup()


@dataclass(frozen=True, slots=True)
class _Candidate:
    """One item that passed every check: it would upload unless the ledger has it."""

    sha256: str
    size: int
    url: bool


class _Planner:
    def __init__(self, settings: IngestSettings, ledger: Ledger | None, report: PlanReport) -> None:
        self.settings = settings
        self.ledger = ledger
        self.report = report
        self.seen = _SeenHashes()
        self.rules = MetadataRules.from_settings(settings)
        self.pending: list[_Candidate] = []
        limits = BatchLimits.from_settings(settings)
        # The real packing rules; `create` only counts (nothing is written).
        self.file_batches = Batcher(
            BatchLimits(limits.max_files, limits.max_bytes, float("inf")),
            create=self._count(report.files_up),
            enqueue=lambda _batch_id: None,
        )
        self.url_batches = Batcher(
            BatchLimits(limits.max_files, 2**63, float("inf")),
            create=self._count(report.urls_up),
            enqueue=lambda _batch_id: None,
        )
        self._next_id = 0

    @staticmethod
    def _count(up: UploadCount) -> Callable[[Any], int]:
        def create(_ids: Any) -> int:
            up.requests += 1
            return up.requests

        return create

    def offer(self, candidate: _Candidate) -> None:
        """A would-be upload, decided once the ledger is asked about a chunk of them."""
        if not self.seen.first_time(candidate.sha256):
            self.report.duplicates_within += 1
            return
        self.pending.append(candidate)
        if len(self.pending) >= _LOOKUP_CHUNK:
            self.decide()

    def decide(self) -> None:
        known: set[str] = set()
        if self.ledger is not None and self.pending:
            known = hashes_with_originals(self.ledger, {c.sha256 for c in self.pending})
        for c in self.pending:
            if c.sha256 in known:
                self.report.duplicates_of_uploaded += 1
                continue
            self._next_id += 1
            up = self.report.urls_up if c.url else self.report.files_up
            up.items += 1
            up.bytes += c.size
            (self.url_batches if c.url else self.file_batches).add(self._next_id, c.size)
        self.pending = []

    def finish(self) -> None:
        self.decide()
        self.file_batches.flush()
        self.url_batches.flush()


def plan(
    settings: IngestSettings,
    ledger: Ledger | None,
    target: Path,
    *,
    progress: Callable[[int], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> PlanReport:
    """What taking `target` (a folder, or one image URL list) in would do. Reads only."""
    started = clock()
    top = os.path.realpath(target)
    report = PlanReport(root=top, uploads_per_day=settings.uploads_per_day)
    planner = _Planner(settings, ledger, report)
    try:
        if os.path.isdir(top):
            _plan_tree(planner, top, progress)
        else:
            report.files += 1
            _plan_manifest(planner, top, os.path.basename(top))
            if progress is not None:
                progress(1)
        planner.finish()
    finally:
        planner.seen.close()
    report.seconds = clock() - started
    return report


def _plan_tree(planner: _Planner, top: str, progress: Callable[[int], None] | None) -> None:
    settings, report = planner.settings, planner.report
    path_filter = PathFilter.from_settings(settings)
    defaults = DefaultsReader(top)
    unreadable: list[tuple[str, str]] = []
    for entry in walk(top, None, unreadable):
        report.files += 1
        rel_path = os.path.relpath(entry.path, top)
        rule = path_filter.excluded_by(rel_path)
        if rule is not None:
            report.excluded += 1
        elif is_manifest(entry.name):
            _plan_manifest(planner, entry.path, rel_path)
        else:
            _plan_file(planner, entry.path, rel_path, top, defaults)
        if progress is not None:
            progress(1)
    for folder, error in unreadable:
        report.fail(Reason.UNREADABLE, f"{folder} ({error})")


def _plan_file(
    planner: _Planner, path: str, rel_path: str, top: str, defaults: DefaultsReader
) -> None:
    settings, report = planner.settings, planner.report
    new = describe(
        path,
        rel_path=rel_path,
        source_root=top,
        origin=Origin.SCAN,
        seen_at=time.time(),
        sidecar_path=find_sidecar(path),
        defaults=defaults,
        max_image_bytes=settings.max_image_bytes,
        rules=planner.rules,
    )
    if new.reason is not None or new.sha256 is None:
        report.kinds["other"] += 1
        report.fail(new.reason or Reason.INTAKE_FAILED, rel_path)
        return
    try:
        content_type = check_image(Path(path), max_bytes=settings.max_image_bytes)
    except FileRejected as rejected:
        report.kinds["other"] += 1
        report.fail(rejected.reason, rel_path)
        return
    report.kinds[content_type] += 1
    if is_convertible(content_type):
        report.converted += 1
    planner.offer(_Candidate(new.sha256, new.size, url=False))


def _plan_manifest(planner: _Planner, path: str, rel_path: str) -> None:
    report = planner.report
    report.kinds["manifest"] += 1
    report.manifests += 1
    try:
        lines: Iterator[ManifestLine] = read_manifest(path)
        for line in lines:
            report.url_lines += 1
            if line.error is not None or line.url is None:
                report.fail(line.reason, f"{rel_path}:{line.line}")
                continue
            planner.offer(_Candidate(url_identity(line.url), 0, url=True))
    except FileRejected as rejected:
        report.fail(rejected.reason, rel_path)

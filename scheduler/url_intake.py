"""Image URL lists in the watcher: a claimed manifest read a slice per tick, one
ledger row per URL line.

    claim (rename, like any file) -> start() -> step() every tick: up to
    `MANIFEST_LINES_PER_TICK` lines read (reka_ingest.files.manifests) and handed to the
    recorder -> at the end: every row recorded, then the manifest to done/, or to
    failed/ with NAME.error.json naming its bad lines.

A URL row: origin `url`, no bytes (`size` 0), `path` the URL as written,
`source_root` the manifest as dropped (inbox/FOLDER/NAME.urls), `work_path` the
claimed manifest's path + `#L<line>` (unique per line, and the same when the
manifest is read again), `sha256` the URL's identity (`url_identity`: the same URL
twice is a `duplicate`, across manifests too), metadata the CSV cells over the
`_defaults.json` layers of the manifest's folder over its folders' values
(INGEST_PATH_METADATA), validated like a sidecar (a bad one, or a cell not of
its key's type, fails that row alone, `bad_sidecar`; folders that do not fit the
pattern fail every row with `path_mismatch` when the rule says fail). A line that
is not a usable URL is a `failed` row (`bad_url`) whose message names the
manifest and the line; its `path` is the line with any password masked
(`user:***@host`, reka_ingest.files.manifests.mask_credentials).

The manifest itself has no row while its lines have theirs: every URL line ends
indexed, duplicate or failed with a reason, and the manifest's fate (done/, or
failed/ with the bad lines) follows from theirs. It gets a `failed` row of its
own only when it yields no row at all or cannot be read to the end (not text,
no `url` column, no URL line, a read error): then it is a failed file like any
other (the recorder moves it to failed/ with its reason file).

A crash part way leaves the manifest in its claim folder: the next start's
recovery hands it back here, and reading it again records only the lines the
ledger does not hold yet (their work paths are the same).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Final

from reka_ingest.core.errors import FileRejected
from reka_ingest.core.logs import get_logger
from reka_ingest.core.settings import AfterUpload, IngestSettings
from reka_ingest.core.states import Origin, Reason
from reka_ingest.files.manifests import ManifestLine, read_manifest, url_identity
from reka_ingest.files.outbox import (
    file_done,
    file_failed,
    in_work_area,
    remove_empty_claim_folders,
)
from reka_ingest.ledger import Ledger
from reka_ingest.ledger.intake import NewFile, failed_file, ids_of_work_paths
from scheduler import sidecar as sc
from scheduler.describe import MetadataRules
from scheduler.recorder import Recorder

log = get_logger(__name__)

# Lines read per watcher tick: a million-line list takes many ticks, and new files
# dropped meanwhile are still taken.
MANIFEST_LINES_PER_TICK: Final = 20_000
# Bad lines a manifest's reason file lists (the total is always given).
MAX_REPORTED_BAD_LINES: Final = 100
LINE_MARK: Final = "#L"


def line_work_path(manifest_work_path: str, line: int) -> str:
    """A URL row's work path: its manifest's, and the line number."""
    return f"{manifest_work_path}{LINE_MARK}{line}"


@dataclass(slots=True)
class _Reading:
    work_path: str
    rel_path: str
    source: str  # the manifest as dropped: inbox/rel_path
    origin: Origin
    seen_at: float
    lines: Iterator[ManifestLine] | None = None  # None once read to the end
    layers: list[sc.Layer] | str = field(default_factory=list)  # or why they are bad
    folders_refused: FileRejected | None = None  # its folders do not fit INGEST_PATH_METADATA
    urls: int = 0  # good URL rows handed to the recorder
    first_line: int | None = None
    bad: list[dict[str, object]] = field(default_factory=list)  # the first few
    bad_total: int = 0
    bad_reasons: set[Reason] = field(default_factory=set)
    rejected: FileRejected | None = None


@dataclass(slots=True)
class ManifestCounts:
    manifests: int = 0  # started
    done: int = 0  # moved to done/
    failed: int = 0  # to failed/ (bad lines, or unusable as a whole)
    urls: int = 0  # URL rows handed to the recorder
    bad_lines: int = 0


class ManifestIntake:
    """The claimed manifests of one watcher, read in turn, a slice per `step`."""

    def __init__(
        self,
        settings: IngestSettings,
        ledger: Ledger,
        recorder: Recorder,
        *,
        root: str,
        defaults: sc.DefaultsReader | None,
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.recorder = recorder
        self.root = root
        self.defaults = defaults
        self.clock = clock
        self.counts = ManifestCounts()
        self.folders = MetadataRules.from_settings(settings).folders
        self._open: deque[_Reading] = deque()

    def __len__(self) -> int:
        return len(self._open)

    def start(self, work_path: str, rel_path: str, origin: Origin, seen_at: float) -> None:
        """A claimed manifest, to be read by the next steps."""
        reading = _Reading(
            work_path=work_path,
            rel_path=rel_path,
            source=os.path.join(self.root, rel_path),
            origin=origin,
            seen_at=seen_at,
        )
        rel_dir = os.path.dirname(rel_path)
        try:
            if self.defaults is not None:
                reading.layers = self.defaults.layers(rel_dir)
        except FileRejected as err:
            reading.layers = err.message
        try:
            values = self.folders.values(rel_dir)
        except FileRejected as err:
            reading.folders_refused = err
        else:
            if values and isinstance(reading.layers, list):  # the lowest layer: path
                reading.layers.insert(0, (sc.PATH_LAYER, dict(values)))
        reading.lines = read_manifest(work_path)
        self._open.append(reading)
        self.counts.manifests += 1
        log.info("manifest.started", path=rel_path)

    def step(self, max_lines: int = MANIFEST_LINES_PER_TICK) -> int:
        """Read up to `max_lines` lines (finishing the manifests read to the end);
        returns how many were read. Raises `LedgerUnavailable` from the recorder:
        what was read waits in it, and the manifest stays where it was."""
        read = 0
        while self._open and read < max_lines:
            reading = self._open[0]
            if reading.lines is not None:
                read += self._read(reading, max_lines - read)
            if reading.lines is None:
                self._finish(reading)
                self._open.popleft()
        return read

    def _read(self, r: _Reading, budget: int) -> int:
        assert r.lines is not None
        count = 0
        try:
            for line in r.lines:
                count += 1
                self.recorder.add(self._row(r, line))
                if count >= budget:
                    return count
        except FileRejected as err:
            r.rejected = err
        except (OSError, ValueError) as err:  # the reader's own bug or an odd error: stop here
            r.rejected = FileRejected(
                Reason.INTAKE_FAILED, f"reading stopped: {type(err).__name__}: {err}"
            )
        r.lines = None
        return count

    def _row(self, r: _Reading, line: ManifestLine) -> NewFile:
        """The row of one line: a queued URL row, or a failed one saying why."""
        if r.first_line is None:
            r.first_line = line.line
        work_path = line_work_path(r.work_path, line.line)
        name = os.path.basename(r.rel_path)
        if line.url is None:  # bad_url, or bad_sidecar for a bad CSV cell
            return self._bad(r, line, work_path, line.reason, line.error or "not a URL")
        if r.folders_refused is not None:
            refused = r.folders_refused
            return self._bad(r, line, work_path, Reason(refused.reason), refused.message)
        try:
            if isinstance(r.layers, str):
                raise FileRejected(Reason.BAD_SIDECAR, r.layers)
            meta = sc.merge([*r.layers, (f"{name} line {line.line}", line.metadata)])
        except FileRejected as err:
            return self._bad(r, line, work_path, Reason.BAD_SIDECAR, err.message)
        r.urls += 1
        self.counts.urls += 1
        return NewFile(
            path=line.raw,
            source_root=r.source,
            work_path=work_path,
            origin=Origin.URL,
            size=0,
            mtime=0.0,
            sha256=url_identity(line.url),
            seen_at=r.seen_at,
            sidecar=meta.metadata,
            index_flag=meta.index,
        )

    def _bad(
        self, r: _Reading, line: ManifestLine, work_path: str, reason: Reason, why: str
    ) -> NewFile:
        r.bad_total += 1
        r.bad_reasons.add(reason)
        self.counts.bad_lines += 1
        if len(r.bad) < MAX_REPORTED_BAD_LINES:
            r.bad.append({"line": line.line, "reason": reason.value, "url": line.raw, "why": why})
        return failed_file(
            path=line.raw or f"{r.rel_path} line {line.line}",
            source_root=r.source,
            work_path=work_path,
            origin=Origin.URL,
            seen_at=r.seen_at,
            reason=reason,
            message=f"{r.rel_path} line {line.line}: {why}",
        )

    def _finish(self, r: _Reading) -> None:
        """Every row recorded; then the manifest to done/ or failed/."""
        self.recorder.flush()  # LedgerUnavailable: finished again at the next step
        if r.rejected is not None or r.urls + r.bad_total == 0:
            self._fail_whole(r)
            return
        file_id = self._first_id(r)
        settings = self.settings.model_copy(update={"after_upload": AfterUpload.MOVE})
        # A list read where it lies (`reka-ingest scan`) stays there: only its reason
        # file, if any, is written (to failed/).
        in_place = not in_work_area(self.settings, r.work_path)
        if r.bad_total:
            # Its bad lines' reason when they share one (bad_sidecar: a bad cell), else bad_url.
            (reason,) = r.bad_reasons if len(r.bad_reasons) == 1 else (Reason.BAD_URL,)
            final = file_failed(
                settings,
                work_path=r.work_path,
                rel_path=r.rel_path,
                file_id=file_id,
                reason=reason,
                message=_summary(r),
                extra={
                    "file_id": None,  # no row of its own: its lines have theirs
                    "origin": "url list",
                    "urls": r.urls,
                    "bad_lines_total": r.bad_total,
                    "bad_lines": r.bad,
                },
                in_place=in_place,
            )
            self.counts.failed += 1
        else:
            final = file_done(
                settings,
                work_path=r.work_path,
                rel_path=r.rel_path,
                file_id=file_id,
                in_place=in_place,
            )
            self.counts.done += 1
        remove_empty_claim_folders(self.settings, [r.work_path])
        log.info(
            "manifest.read",
            path=r.rel_path,
            urls=r.urls,
            bad_lines=r.bad_total,
            moved_to=final,
        )

    def _first_id(self, r: _Reading) -> int:
        """A number for the manifest's name in done/ or failed/ when taken: its first
        row's id (unique in the ledger). Only a name: the manifest has no row, and its
        reason file says so (`file_id` null)."""
        if r.first_line is None:
            return 0
        path = line_work_path(r.work_path, r.first_line)
        return ids_of_work_paths(self.ledger, [path]).get(path, 0)

    def _fail_whole(self, r: _Reading) -> None:
        """A manifest that gave no row, or could not be read to the end: a failed row
        of its own (the recorder moves it to failed/ with its reason file)."""
        if r.rejected is not None:
            reason, why = Reason(r.rejected.reason), r.rejected.message
        else:
            reason, why = Reason.EMPTY_FILE, "no URL line in this image URL list"
        read = r.urls + r.bad_total
        if read:
            why += f"; {read} line(s) before that were recorded: {_summary(r)}"
        self.recorder.add(
            failed_file(
                path=r.rel_path,
                source_root=self.root,
                work_path=r.work_path,
                origin=r.origin,
                seen_at=r.seen_at,
                reason=reason,
                message=why,
            )
        )
        self.recorder.flush()
        self.counts.failed += 1
        log.warning("manifest.failed", path=r.rel_path, reason=reason, error=why)


def _summary(r: _Reading) -> str:
    if not r.bad_total:
        return f"{r.urls} URL(s), no bad line"
    shown = "; ".join(f"line {b['line']}: {b['why']}" for b in r.bad[:10])
    more = f"; and {r.bad_total - 10} more" if r.bad_total > 10 else ""
    return f"{r.bad_total} bad line(s) of {r.urls + r.bad_total}: {shown}{more}"

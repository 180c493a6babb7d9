"""INGEST_INCLUDE / INGEST_EXCLUDE where files are found: the watcher and `scan`.

A file the rules leave out stays where it is: it is never claimed, read or
hashed, and its sidecar stays beside it (an image is there, so it is no orphan).
It is recorded once, in place, as an `excluded` row whose message names the
rule, so `status`, the metrics and `files --state excluded` count it. A folder
that an exclude ending in `/**` takes whole is not walked at all: it is one
`excluded` row (its path ends with `/`), and so is an event for a file below it.

Once per run: `start` reads this tree's `excluded` rows back, deletes those the
rules (read at start) now take, so the scan that follows takes those files like
new ones, and remembers the rest; each path found excluded during the run is
remembered too (up to `MAX_REMEMBERED`), so a periodic scan passes it by with a
set lookup. Past that bound a path is handed to the recorder again at each scan
and the ledger's unique `work_path` keeps it to one row.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Final

from reka_ingest.core.logs import get_logger
from reka_ingest.core.states import Origin
from reka_ingest.files.filters import PathFilter
from reka_ingest.files.sidecars import SIDECAR_SUFFIX
from reka_ingest.ledger import Ledger
from reka_ingest.ledger.excluded import excluded_rows, forget_excluded
from reka_ingest.ledger.intake import NewFile, excluded_file

log = get_logger(__name__)

# Excluded paths remembered per run (with their stems, about 300 bytes each: some
# 60 MB at most).
MAX_REMEMBERED: Final = 200_000


class Exclusions:
    """The filter of one tree (`root`, a resolved path), recording what it leaves out
    through `add` (the recorder's)."""

    def __init__(
        self,
        path_filter: PathFilter,
        *,
        root: str,
        origin: Origin,
        add: Callable[[NewFile], object],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.filter = path_filter
        self.root = root
        self.origin = origin  # of the rows recorded (an event's is given with it)
        self.add = add
        self.clock = clock
        self.recorded = 0  # excluded rows handed to the recorder in this run
        self.forgotten = 0  # excluded rows deleted at start: the rules take them now
        self._known: set[str] = set()
        self._stems: set[str] = set()  # excluded files' paths without their extension
        self._full = False

    def start(self, ledger: Ledger, root: str | None = None) -> int:
        """Read this tree's `excluded` rows: delete those the rules take now, remember
        the rest. Returns how many were deleted."""
        if root is not None:
            self.root = root
        self._known.clear()
        self._stems.clear()
        self._full = False
        forget: list[int] = []
        for chunk in excluded_rows(ledger, source_root=self.root):
            for row in chunk:
                if self._still_excluded(row.path):
                    self._remember(row.work_path)
                else:
                    forget.append(row.id)
        self.forgotten = forget_excluded(ledger, forget) if forget else 0
        if self.forgotten or self._known:
            log.info(
                "exclusions.start",
                root=self.root,
                excluded=len(self._known),
                taken_now=self.forgotten,
            )
        return self.forgotten

    def _still_excluded(self, rel: str) -> bool:
        """Whether a row's path (a folder's ends with `/`) is still left out, the same way."""
        if rel.endswith("/"):
            folder = rel.rstrip("/")
            top = self.filter.pruned_folder(folder + "/x")
            return top is not None and top[0] == folder
        return self.filter.pruned_folder(rel) is None and self.filter.excluded_by(rel) is not None

    def file(self, path: str, origin: Origin | None = None) -> bool:
        """Whether the rules leave out the file at `path` (recorded once if so)."""
        if not self.filter.active:
            return False
        if path in self._known:
            return True
        rel = self._rel(path)
        top = self.filter.pruned_folder(rel)
        if top is not None:  # below a folder left out whole: that folder's row says so
            folder, by = top
            self._record(os.path.join(self.root, folder), folder + "/", by, origin)
            return True
        rule = self.filter.excluded_by(rel)
        if rule is None:
            return False
        self._record(path, rel, rule, origin)
        return True

    def folder(self, path: str) -> bool:
        """For a walk: whether to leave the folder at `path` unwalked (recorded once if so)."""
        if not self.filter.prunes:
            return False
        if path in self._known:
            return True
        rel = self._rel(path)
        rule = self.filter.pruned_by(rel)
        if rule is None:
            return False
        self._record(path, rel + "/", rule, None)
        return True

    def sidecar(self, path: str) -> bool:
        """Whether the sidecar at `path` belongs to an excluded image (`a.jpg` for
        `a.jpg.json`, `a.*` for `a.json`): it stays beside it, never checked again."""
        stem = path[: -len(SIDECAR_SUFFIX)]
        return stem in self._known or stem in self._stems

    def _record(self, path: str, rel: str, rule: str, origin: Origin | None) -> None:
        if path in self._known:
            return
        self._remember(path)
        self.recorded += 1
        self.add(
            excluded_file(
                path=rel,
                source_root=self.root,
                work_path=path,
                origin=origin or self.origin,
                seen_at=self.clock(),
                rule=rule,
            )
        )

    def _remember(self, path: str) -> None:
        if len(self._known) < MAX_REMEMBERED:
            self._known.add(path)
            self._stems.add(os.path.splitext(path)[0])
        elif not self._full:
            self._full = True
            log.warning(
                "exclusions.memory_full",
                remembered=MAX_REMEMBERED,
                action="later scans hand the others to the ledger, which keeps one row each",
            )

    def _rel(self, path: str) -> str:
        return path[len(self.root) + 1 :]

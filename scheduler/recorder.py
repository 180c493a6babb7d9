"""Recording described files in groups: one ledger transaction for many files.

Each group goes to `record_files` at once. What comes back is routed: a file
already final at intake (failed, or a duplicate of bytes seen before) goes to
the outbox (`failed/` with its reason file, or `done/`), the rest to the
batcher. A file recorded in place (a backfill, a refused symlink) is never
moved: the outbox is told `in_place=True`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from scheduler.batcher import Batcher
from scheduler.constants import RECORD_GROUP_SIZE
from worker.ledger import Ledger
from worker.ledger.intake import NewFile, Recorded, record_files
from worker.ledger.uploads import set_final_path
from worker.logs import get_logger
from worker.outbox import file_done, file_failed
from worker.settings import IngestSettings
from worker.states import FileState, Reason

log = get_logger(__name__)


@dataclass(slots=True)
class RecordCounts:
    recorded: int = 0  # new rows, whatever their state
    queued: int = 0
    duplicates: int = 0
    failed: int = 0
    skipped: int = 0  # already had a row (same work path)

    def add(self, other: RecordCounts) -> None:
        self.recorded += other.recorded
        self.queued += other.queued
        self.duplicates += other.duplicates
        self.failed += other.failed
        self.skipped += other.skipped


class Recorder:
    def __init__(
        self,
        settings: IngestSettings,
        ledger: Ledger,
        batcher: Batcher,
        *,
        clock: Callable[[], float] = time.time,
        group_size: int = RECORD_GROUP_SIZE,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.batcher = batcher
        self.clock = clock
        self.group_size = group_size
        self.totals = RecordCounts()
        self._group: list[NewFile] = []
        self._work_prefix = os.path.join(os.path.realpath(settings.work_dir), "")

    def __len__(self) -> int:
        return len(self._group)

    def add(self, new: NewFile) -> RecordCounts | None:
        """Queue one file for recording; records the group when it is full."""
        self._group.append(new)
        return self.flush() if len(self._group) >= self.group_size else None

    def flush(self) -> RecordCounts:
        """Record every file waiting, route the outcomes, return what happened."""
        group, self._group = self._group, []
        counts = RecordCounts()
        if not group:
            return counts
        try:
            results = record_files(
                self.ledger, group, now=self.clock(), allow_reupload=self.settings.allow_reupload
            )
        except Exception:
            self._group = group + self._group  # nothing is lost: the next flush tries again
            raise
        counts.recorded = len(results)
        counts.skipped = len(group) - len(results)
        by_path = {f.work_path: f for f in group}
        moves: list[tuple[int, str]] = []
        queued: list[tuple[int, int]] = []
        for rec in results:
            new = by_path[rec.work_path]
            if rec.state == FileState.QUEUED:
                counts.queued += 1
                queued.append((rec.file_id, rec.size))
            elif rec.state == FileState.DUPLICATE:
                counts.duplicates += 1
                final = self._done(new, rec)
                if final is not None:
                    moves.append((rec.file_id, final))
            else:
                counts.failed += 1
                moves.append((rec.file_id, self._failed(new, rec)))
        set_final_path(self.ledger, moves, now=self.clock())
        self.batcher.add_many(queued)  # the batches this fills: created in one write
        self.totals.add(counts)
        log.info(
            "recorder.group",
            recorded=counts.recorded,
            queued=counts.queued,
            duplicates=counts.duplicates,
            failed=counts.failed,
            skipped=counts.skipped,
        )
        return counts

    def _in_place(self, new: NewFile) -> bool:
        folder = os.path.join(os.path.realpath(os.path.dirname(new.work_path)), "")
        return not folder.startswith(self._work_prefix)

    def _done(self, new: NewFile, rec: Recorded) -> str | None:
        log.info(
            "recorder.duplicate", file_id=rec.file_id, path=new.path, duplicate_of=rec.duplicate_of
        )
        return file_done(
            self.settings,
            work_path=new.work_path,
            rel_path=new.path,
            file_id=rec.file_id,
            in_place=self._in_place(new),
        )

    def _failed(self, new: NewFile, rec: Recorded) -> str:
        return file_failed(
            self.settings,
            work_path=new.work_path,
            rel_path=new.path,
            file_id=rec.file_id,
            reason=str(new.reason or Reason.UPLOAD_FAILED),
            message=new.message or "",
            extra={"sha256": new.sha256, "origin": new.origin},
            in_place=self._in_place(new),
        )

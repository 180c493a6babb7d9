"""Recording described files in groups: one ledger transaction for many files.

Each group goes to `record_files` at once. What comes back is routed: a file
already final at intake (failed, or a duplicate of bytes seen before) goes to
the outbox (`failed/` with its reason file, or `done/`), the rest to the
batcher. A file recorded in place (a backfill, a refused symlink) is never
moved: the outbox is told `in_place=True`.

A poison file fails alone, by construction: a group whose transaction fails
is split in halves until the file at fault stands alone; that file is then
recorded as `failed` (`intake_failed`, with the error's text), stripped to
what any row can hold. Only when even that cannot be written and the ledger
does not answer at all is it an outage: what was not recorded waits in the
group for the next flush (`LedgerUnavailable`). Moving a file to `done/` or
`failed/` never stops the group either (the outbox never raises).

What follows a group's recording (writing where the files moved to `done/`
or `failed/` went, then handing the queued rows to the batchers, which create
their batches) never loses a recorded row either. The first of these steps to
meet an outage ends them, and it is raised as `LedgerUnavailable`, never as
the driver's error (which a caller looking at one path would take for that
path's fault): final paths not written and rows not handed over wait here,
rows handed over but not batched wait in the batcher, all tried again at the
next flush or tick. Any other error there is no file's fault either: it is
logged with what waits, and the work is kept for the next try (a final path
that fails alone is given up, logged with its file: its row's outcome stands).

A group whose COMMIT happened although its answer was lost (the connection cut
at COMMIT) waits like any group the ledger did not take, and is recorded again:
`record_files` makes no second row, and gives back the rows whose follow-up is
not done (`again`), which are then batched or moved as new ones would be. The
beat sweep batches any queued row left without a batch all the same
(`reconcile.batch_stranded`): whatever loses track of a row, it is not lost.

A run of files starts with groups of one batch (`batch_max_files`), one such
group for each request a worker keeps in flight (`worker_concurrency`), then
doubling up to `group_size` while groups keep filling: a burst's first requests
leave before hundreds of files are claimed, hashed and recorded, and every
request slot has its first batch as soon as that batch is full. A flush starts
over.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

from reka_ingest.core.errors import LedgerUnavailable
from reka_ingest.core.logs import get_logger
from reka_ingest.core.settings import IngestSettings
from reka_ingest.core.states import FileState, Origin, Reason
from reka_ingest.files.outbox import file_done, file_failed, in_work_area
from reka_ingest.ledger import Ledger
from reka_ingest.ledger.intake import NewFile, Recorded, record_files
from reka_ingest.ledger.uploads import set_final_path
from scheduler.batcher import Batcher
from scheduler.constants import RECORD_GROUP_SIZE

log = get_logger(__name__)


@dataclass(slots=True)
class RecordCounts:
    recorded: int = 0  # new rows, whatever their state
    queued: int = 0
    duplicates: int = 0
    failed: int = 0
    skipped: int = 0  # already had a row (same work path), nothing left to do for it
    # Already had a row whose batching or move was not done (a retry after a COMMIT
    # whose answer was lost): done now, not counted in the states above again.
    resumed: int = 0
    isolated: int = 0  # files whose own row could not be written as described
    excluded: int = 0  # left in place by INGEST_INCLUDE / INGEST_EXCLUDE (never moved)

    def add(self, other: RecordCounts) -> None:
        self.recorded += other.recorded
        self.queued += other.queued
        self.duplicates += other.duplicates
        self.failed += other.failed
        self.skipped += other.skipped
        self.resumed += other.resumed
        self.isolated += other.isolated
        self.excluded += other.excluded


class Recorder:
    def __init__(
        self,
        settings: IngestSettings,
        ledger: Ledger,
        batcher: Batcher,
        *,
        clock: Callable[[], float] = time.time,
        group_size: int = RECORD_GROUP_SIZE,
        url_batcher: Batcher | None = None,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.batcher = batcher
        # URL rows (a line of an image URL list) are batched apart: a request is one kind.
        self.url_batcher = url_batcher or batcher
        self.clock = clock
        self.group_size = group_size
        self._first_group = max(1, min(group_size, settings.batch_max_files))
        self._first_groups = settings.worker_concurrency  # one batch each, then doubling
        self._limit = self._first_group
        self._small_left = self._first_groups
        self.totals = RecordCounts()
        self._group: list[NewFile] = []
        # Recorded, what still waits for the ledger: final paths to write, and the
        # queued rows (file_id, size) to hand to each batcher (which creates batches).
        self._moves: list[tuple[int, str]] = []
        self._queued: list[tuple[int, int]] = []
        self._url_queued: list[tuple[int, int]] = []
        self._wait_error: BaseException | None = None  # what the last wait met (`_report_wait`)

    def __len__(self) -> int:
        return len(self._group)

    @property
    def final_paths_waiting(self) -> int:
        """Final paths (of files moved to done/ or failed/) not written to the ledger yet."""
        return len(self._moves)

    def add(self, new: NewFile) -> RecordCounts | None:
        """Queue one file for recording; records the group when it is full.

        Raises `LedgerUnavailable` as `flush` does (the file waits in the group)."""
        self._group.append(new)
        if len(self._group) < self._limit:
            return None
        counts = self._record_group()
        if self._small_left > 1:
            self._small_left -= 1
        else:
            self._limit = min(self._limit * 2, self.group_size)
        return counts

    def flush(self) -> RecordCounts:
        """Record every file waiting, route the outcomes, return what happened; the
        next run of files starts with a small group again.

        Raises `LedgerUnavailable` only when the ledger does not answer; what was
        recorded before that is routed, the rest waits for the next flush.
        """
        self._limit, self._small_left = self._first_group, self._first_groups
        return self._record_group()

    def _record_group(self) -> RecordCounts:
        group, self._group = self._group, []
        counts = RecordCounts()
        if not group:
            outage = self._follow_up()  # what an earlier outage left waiting
            if outage is not None:
                raise self._unavailable(outage) from self._wait_error
            return counts
        results, pending, group = self._record_isolated(group, counts)
        counts.resumed = sum(rec.again for rec in results)
        counts.recorded = len(results) - counts.resumed
        counts.skipped = len(group) - len(results) - len(pending)
        by_path = {f.work_path: f for f in group}
        # After what an earlier outage left waiting, in order.
        moves, queued, url_queued = self._moves, self._queued, self._url_queued
        for rec in results:
            new = by_path[rec.work_path]
            new_row = not rec.again  # a resumed row was counted when it was made
            if rec.state == FileState.QUEUED:
                counts.queued += new_row
                (url_queued if new.origin == Origin.URL else queued).append((rec.file_id, rec.size))
            elif new.origin == Origin.URL:  # no bytes to move: its outcome is in the ledger
                counts.duplicates += new_row and rec.state == FileState.DUPLICATE
                counts.failed += new_row and rec.state == FileState.FAILED
            elif rec.state == FileState.EXCLUDED:
                counts.excluded += new_row  # left where it is: nothing to move, no reason file
            elif rec.state == FileState.DUPLICATE:
                counts.duplicates += new_row
                final = self._done(new, rec)
                if final is not None:
                    moves.append((rec.file_id, final))
            else:
                counts.failed += new_row
                reason_file = self._failed(new, rec)
                if reason_file is not None:
                    moves.append((rec.file_id, reason_file))
        # The ledger just did not answer: what follows waits for the next flush.
        outage = self._follow_up() if not pending else None
        self.totals.add(counts)
        log.info(
            "recorder.group",
            recorded=counts.recorded,
            queued=counts.queued,
            duplicates=counts.duplicates,
            failed=counts.failed,
            skipped=counts.skipped,
            resumed=counts.resumed,
            isolated=counts.isolated,
            excluded=counts.excluded,
        )
        if pending:
            self._group = pending + self._group
            raise self._unavailable(
                f"{len(pending)} files wait to be recorded"
            ) from self._wait_error
        if outage is not None:
            raise self._unavailable(outage) from self._wait_error
        return counts

    def _follow_up(self) -> str | None:
        """Write the final paths waiting, then hand the queued rows to their batchers
        (which create the batches they fill). Returns what waits for the ledger when
        a step met an outage (None if none): the steps after it are not tried, their
        work waits. Any other error is logged; its work is kept for the next try."""
        steps: list[tuple[str, int, Callable[[], object]]] = [
            ("final_paths", len(self._moves), self._write_moves),
            ("batches", len(self._queued), lambda: _hand(self.batcher, self._take_queued())),
            (
                "url_batches",
                len(self._url_queued),
                lambda: _hand(self.url_batcher, self._take_urls()),
            ),
        ]
        for step, files, run in steps:
            if not files:
                continue
            try:
                run()
            except Exception as err:  # no file's fault: the work waits
                error = f"{type(err).__name__}: {err}"
                if isinstance(err, LedgerUnavailable) or self.ledger.is_outage(err):
                    self._report_wait(err, step=step, waiting=files)
                    return f"{step}: {files} files wait"
                log.error(
                    "recorder.step_failed",
                    step=step,
                    files=files,
                    error=error,
                    action="kept; tried again at the next flush or tick",
                    exc_info=err,
                )
        return None

    def _report_wait(self, err: BaseException, **fields: object) -> None:
        """Keep and log what a write that must wait met (an outage, or a concurrent
        write on PostgreSQL: `Ledger.is_conflict`)."""
        self._wait_error = err
        if self.ledger.is_conflict(err):
            log.warning("recorder.ledger_conflict", **fields, error=str(err), action="tried again")
        else:
            log.error("recorder.ledger_unavailable", **fields, error=str(err))

    def _unavailable(self, waiting: str) -> LedgerUnavailable:
        """What waits, after the words for what the last wait met."""
        err = self._wait_error
        words = "the ledger does not answer" if err is None else self.ledger.why_waiting(err)
        return LedgerUnavailable(f"{words}; {waiting}")

    def _take_queued(self) -> list[tuple[int, int]]:
        files, self._queued = self._queued, []
        return files

    def _take_urls(self) -> list[tuple[int, int]]:
        files, self._url_queued = self._url_queued, []
        return files

    def _write_moves(self) -> None:
        """Write the final paths waiting; what an outage stops stays waiting.

        Any other error splits them until the one at fault is alone: that one is
        given up (its row's outcome stands; the path is logged), the rest written.
        """
        moves, self._moves = self._moves, []
        stack = [moves]
        while stack:
            part = stack.pop()
            try:
                set_final_path(self.ledger, part, now=self.clock())
                continue
            except Exception as err:  # an outage waits; else the one at fault alone
                if self.ledger.is_outage(err) or not self.ledger.reachable():
                    self._moves = [*part, *(m for rest in reversed(stack) for m in rest)]
                    raise LedgerUnavailable(
                        f"{self.ledger.why_waiting(err)}; {len(self._moves)} final paths"
                        f" wait to be written: {type(err).__name__}: {err}"
                    ) from err
                if len(part) > 1:
                    half = len(part) // 2
                    stack.extend([part[half:], part[:half]])
                    continue
                log.error(
                    "recorder.final_path_unwritten",
                    file_id=part[0][0],
                    final_path=part[0][1],
                    error=f"{type(err).__name__}: {err}",
                )

    def _record_isolated(
        self, group: list[NewFile], counts: RecordCounts
    ) -> tuple[list[Recorded], list[NewFile], list[NewFile]]:
        """Record `group`, splitting any part that fails until the file at fault is
        alone; an outage (the database not working at all) is no file's fault, and
        what is left then waits. Returns (what was recorded, what waits for the
        outage to end, the group as recorded: a file recorded by its stand-in row
        is replaced by it)."""
        results: list[Recorded] = []
        stack = [group]
        replaced: dict[str, NewFile] = {}
        while stack:
            part = stack.pop()
            try:
                results.extend(self._record(part))
                continue
            except Exception as err:  # noqa: BLE001 - any error: splitting finds the file at fault
                error = err
            if self.ledger.is_outage(error):
                pending = [*part, *(f for rest in reversed(stack) for f in rest)]
                self._report_wait(error, waiting=len(pending))
                return results, pending, group
            if len(part) > 1:
                half = len(part) // 2
                stack.extend([part[half:], part[:half]])  # the first half is tried first
                continue
            alone = self._record_alone(part[0], error, results)
            if alone is None:
                if not self.ledger.reachable():
                    pending = [f for rest in reversed(stack) for f in rest]
                    log.error("recorder.ledger_unavailable", waiting=len(pending) + 1)
                    return results, [part[0], *pending], group
                continue  # its bytes stay in work/: the next start's recovery tries again
            counts.isolated += 1
            replaced[part[0].work_path] = alone
            log.error(
                "recorder.file_isolated",
                path=alone.path,
                error=f"{type(error).__name__}: {error}",
            )
        if replaced:
            group = [replaced.get(f.work_path, f) for f in group]
        return results, [], group

    def _record_alone(
        self, new: NewFile, error: Exception, results: list[Recorded]
    ) -> NewFile | None:
        """Record a file whose own row failed as a failed stand-in row (a bare one
        if need be); returns the stand-in recorded, or None when none could be."""
        for alone in (_stand_in(new, error), _bare(new, error)):
            try:
                results.extend(self._record([alone]))
            except Exception as err:  # noqa: BLE001 - the bare row is tried next, then the caller decides
                log.warning("recorder.stand_in_failed", error=f"{type(err).__name__}: {err}")
                continue
            return alone
        log.error("recorder.unrecordable", path=new.path, error=f"{type(error).__name__}")
        return None

    def _record(self, part: list[NewFile]) -> list[Recorded]:
        return record_files(
            self.ledger, part, now=self.clock(), allow_reupload=self.settings.allow_reupload
        )

    def _done(self, new: NewFile, rec: Recorded) -> str | None:
        log.info(
            "recorder.duplicate", file_id=rec.file_id, path=new.path, duplicate_of=rec.duplicate_of
        )
        return file_done(
            self.settings,
            work_path=new.work_path,
            rel_path=new.path,
            file_id=rec.file_id,
            in_place=not in_work_area(self.settings, new.work_path),
        )

    def _failed(self, new: NewFile, rec: Recorded) -> str | None:
        return file_failed(
            self.settings,
            work_path=new.work_path,
            rel_path=new.path,
            file_id=rec.file_id,
            reason=str(rec.reason or new.reason or Reason.UPLOAD_FAILED),
            message=rec.message or new.message or "",
            extra={"sha256": new.sha256, "origin": new.origin},
            in_place=not in_work_area(self.settings, new.work_path),
        )


def _hand(batcher: Batcher, files: list[tuple[int, int]]) -> None:
    """Put files in a batcher, which creates the batches they fill: should that fail,
    they stay held there, and its next poll creates them."""
    batcher.add_many(files)


def _stand_in(new: NewFile, error: BaseException) -> NewFile:
    """A row any ledger can hold for a file whose own row could not be written."""
    return dataclasses.replace(
        new,
        sidecar=None,
        index_flag=True,
        reason=Reason.INTAKE_FAILED,
        message=f"the ledger could not record this file: {type(error).__name__}: {error}",
    )


def _bare(new: NewFile, error: BaseException) -> NewFile:
    """The least a row can say: the file's name in ASCII, that it failed, and why."""
    return dataclasses.replace(
        _stand_in(new, error),
        path=new.path.encode("ascii", "backslashreplace").decode("ascii")[:1000],
        size=0,
        mtime=0.0,
        sha256=None,
        message=f"the ledger could not record this file: {type(error).__name__}",
    )

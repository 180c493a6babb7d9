"""Packing recorded files into batches: one upload request each.

A batch closes when it holds `max_files` files, when the next file would
take it past `max_bytes`, or `max_wait` seconds after its first file arrived,
whichever comes first; a single file larger than `max_bytes` goes alone.
Closing a batch creates it in the ledger, then enqueues its id. A failed
enqueue (the broker is down) is logged and survived: the batch is already
`queued` in the ledger, marked unsent (`unsent`: the ledger's `mark_unsent`),
and the beat sweep sends it at its next tick.

A failed create loses nothing: the batches it was creating stay sealed, their
files held, and the next `poll` (or `add`, `add_many`, `flush`) creates them,
in the order they closed. The ledger's `create_batches` takes only rows that
are still unbatched, and gives back the batch a group already went into, so a
create whose commit happened although the call failed (a connection lost at
COMMIT) is never made a second time. Against the ledger an outage is raised as
`LedgerUnavailable` (`ledger_batches`, `ledger_batch_groups`); any other error
is raised as it is, after logging which batches wait.

Pure: the ledger write and the enqueue are injected callables, the clock too,
so every rule is tested without a thread, a database or a broker.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from reka_ingest.core.errors import LedgerUnavailable
from reka_ingest.core.logs import get_logger
from reka_ingest.core.settings import IngestSettings
from reka_ingest.ledger import Ledger
from reka_ingest.ledger.intake import create_batch, create_batches
from reka_ingest.ledger.reconcile import mark_unsent

log = get_logger(__name__)

CreateBatch = Callable[[Sequence[int]], int]
CreateBatches = Callable[[Sequence[Sequence[int]]], list[int]]
Enqueue = Callable[[int], None]
Unsent = Callable[[Sequence[int]], None]


@dataclass(frozen=True, slots=True)
class BatchLimits:
    max_files: int
    max_bytes: int
    max_wait: float

    @classmethod
    def from_settings(cls, settings: IngestSettings) -> BatchLimits:
        return cls(settings.batch_max_files, settings.batch_max_bytes, settings.batch_max_wait)

    @classmethod
    def for_urls(cls, settings: IngestSettings) -> BatchLimits:
        """URL rows (no bytes here: the API fetches each URL): by count and wait only."""
        return cls(settings.batch_max_files, sys.maxsize, settings.batch_max_wait)


def ledger_batches(ledger: Ledger, clock: Callable[[], float] = time.time) -> CreateBatch:
    """The real `create`: one `create_batch` transaction per closed batch."""

    def create(file_ids: Sequence[int]) -> int:
        try:
            return create_batch(ledger, file_ids, now=clock())
        except Exception as err:
            if ledger.is_outage(err):
                raise _unavailable(err, 1) from err
            raise

    return create


def ledger_batch_groups(ledger: Ledger, clock: Callable[[], float] = time.time) -> CreateBatches:
    """The real `create_many`: every batch closed together, in one transaction."""

    def create_many(groups: Sequence[Sequence[int]]) -> list[int]:
        try:
            return create_batches(ledger, groups, now=clock())
        except Exception as err:
            if ledger.is_outage(err):
                raise _unavailable(err, len(groups)) from err
            raise

    return create_many


def _unavailable(err: Exception, batches: int) -> LedgerUnavailable:
    """The ledger's outage `err`, said as what waits for it."""
    return LedgerUnavailable(
        f"{Ledger.why_waiting(err)}; {batches} batches wait to be created: "
        f"{type(err).__name__}: {err}"
    )


def ledger_batchers(
    settings: IngestSettings, ledger: Ledger, enqueue: Enqueue, clock: Callable[[], float]
) -> tuple[Batcher, Batcher]:
    """The two batchers every taker of files uses, writing to the ledger: one for files
    (by count and bytes) and one for URL rows (by count only; a request is one kind)."""

    def batcher(limits: BatchLimits) -> Batcher:
        return Batcher(
            limits,
            create=ledger_batches(ledger, clock),
            create_many=ledger_batch_groups(ledger, clock),
            enqueue=enqueue,
            clock=clock,
            unsent=lambda ids: mark_unsent(ledger, ids),
        )

    return batcher(BatchLimits.from_settings(settings)), batcher(BatchLimits.for_urls(settings))


@dataclass(slots=True)
class _Sealed:
    ids: list[int]
    size: int
    why: str


class Batcher:
    """One open batch at a time; `add` (or `add_many`), then `poll` on every tick,
    `flush` at the end.

    A full batch is sealed, then created in the ledger and enqueued; `add_many`
    creates all the batches it seals in one ledger write. A batch whose creation
    failed stays sealed (its files still held) and the next `poll` tries again.
    """

    def __init__(
        self,
        limits: BatchLimits,
        *,
        create: CreateBatch,
        enqueue: Enqueue,
        clock: Callable[[], float] = time.time,
        create_many: CreateBatches | None = None,
        unsent: Unsent | None = None,
    ) -> None:
        self.limits = limits
        self._create_many: CreateBatches = create_many or (
            lambda groups: [create(g) for g in groups]
        )
        self._enqueue = enqueue
        self._unsent = unsent
        self._clock = clock
        self._ids: list[int] = []
        self._held: set[int] = set()  # open and sealed
        self._sealed: list[_Sealed] = []
        self._bytes = 0
        self._opened_at: float | None = None
        self.batches_created = 0
        self.enqueue_failures = 0

    @property
    def pending(self) -> int:
        """Files in hand: in the open batch, or in batches not created yet."""
        return len(self._ids) + sum(len(g.ids) for g in self._sealed)

    def holds(self, file_id: int) -> bool:
        return file_id in self._held

    def deadline(self) -> float | None:
        """When the open batch closes by waiting (None when nothing is open); now
        when a sealed batch still waits to be created."""
        if self._sealed:
            return self._clock()
        return None if self._opened_at is None else self._opened_at + self.limits.max_wait

    def add(self, file_id: int, size: int) -> list[int]:
        """Put one file in the open batch; returns the ids of batches this closed."""
        self._put(file_id, size)
        return self._publish()

    def add_many(self, files: Iterable[tuple[int, int]]) -> list[int]:
        """Put many `(file_id, size)` in; the batches they fill are created together."""
        for file_id, size in files:
            self._put(file_id, size)
        return self._publish()

    def poll(self) -> list[int]:
        """Close the open batch if it has waited `max_wait`; returns the closed batch ids."""
        if self._opened_at is not None and self._clock() >= self._opened_at + self.limits.max_wait:
            self._seal("wait")
        return self._publish()

    def flush(self) -> list[int]:
        """Close the open batch now, whatever its size (at stop, at the end of a backfill)."""
        if self._ids:
            self._seal("flush")
        return self._publish()

    def _put(self, file_id: int, size: int) -> None:
        if file_id in self._held:
            return
        if self._ids and self._bytes + size > self.limits.max_bytes:
            self._seal("bytes")
        if not self._ids:
            self._opened_at = self._clock()
        self._ids.append(file_id)
        self._held.add(file_id)
        self._bytes += size
        if len(self._ids) >= self.limits.max_files:
            self._seal("count")
        elif self._bytes >= self.limits.max_bytes:
            self._seal("bytes")

    def _seal(self, why: str) -> None:
        self._sealed.append(_Sealed(self._ids, self._bytes, why))
        self._ids, self._bytes, self._opened_at = [], 0, None

    def _publish(self) -> list[int]:
        """Create the sealed batches (raises: they stay sealed), then enqueue each."""
        if not self._sealed:
            return []
        sealed = self._sealed
        try:
            batch_ids = self._create_many([g.ids for g in sealed])
        except Exception as err:  # they stay sealed, in order: created at the next try
            log.error(
                "batcher.create_failed",
                batches=len(sealed),
                files=sum(len(g.ids) for g in sealed),
                first_file_id=sealed[0].ids[0] if sealed[0].ids else None,
                error=f"{type(err).__name__}: {err}",
                action="kept; created at the next poll",
            )
            raise
        self._sealed = []
        unsent: list[int] = []
        for group, batch_id in zip(sealed, batch_ids, strict=True):
            self._held.difference_update(group.ids)
            self.batches_created += 1
            try:
                self._enqueue(batch_id)
            except Exception as err:  # noqa: BLE001 - any broker error: the ledger keeps the batch
                self.enqueue_failures += 1
                unsent.append(batch_id)
                log.warning(
                    "batcher.enqueue_failed",
                    batch_id=batch_id,
                    error=repr(err),
                    files=len(group.ids),
                )
            else:
                log.info(
                    "batcher.batch",
                    batch_id=batch_id,
                    files=len(group.ids),
                    bytes=group.size,
                    closed_by=group.why,
                )
        if unsent and self._unsent is not None:
            try:
                self._unsent(unsent)  # the sweep's next tick sends them
            except Exception as err:  # noqa: BLE001 - then they wait as a lost message does
                log.warning("batcher.unsent_not_marked", batches=unsent, error=repr(err))
        return batch_ids

"""Packing recorded files into batches: one upload request each.

A batch closes when it holds `max_files` files, when the next file would
take it past `max_bytes`, or `max_wait` seconds after its first file arrived,
whichever comes first; a single file larger than `max_bytes` goes alone.
Closing a batch creates it in the ledger, then enqueues its id. A failed
enqueue (the broker is down) is logged and survived: the batch is already
`queued` in the ledger, and the beat sweep sends it again later.

Pure: the ledger write and the enqueue are injected callables, the clock too,
so every rule is tested without a thread, a database or a broker.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from worker.ledger import Ledger
from worker.ledger.intake import create_batch
from worker.logs import get_logger
from worker.settings import IngestSettings

log = get_logger(__name__)

CreateBatch = Callable[[Sequence[int]], int]
Enqueue = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class BatchLimits:
    max_files: int
    max_bytes: int
    max_wait: float

    @classmethod
    def from_settings(cls, settings: IngestSettings) -> BatchLimits:
        return cls(settings.batch_max_files, settings.batch_max_bytes, settings.batch_max_wait)


def ledger_batches(ledger: Ledger, clock: Callable[[], float] = time.time) -> CreateBatch:
    """The real `create`: one `create_batch` transaction per closed batch."""

    def create(file_ids: Sequence[int]) -> int:
        return create_batch(ledger, file_ids, now=clock())

    return create


class Batcher:
    """One open batch at a time; `add`, then `poll` on every tick, `flush` at the end."""

    def __init__(
        self,
        limits: BatchLimits,
        *,
        create: CreateBatch,
        enqueue: Enqueue,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.limits = limits
        self._create = create
        self._enqueue = enqueue
        self._clock = clock
        self._ids: list[int] = []
        self._held: set[int] = set()
        self._bytes = 0
        self._opened_at: float | None = None
        self.batches_created = 0
        self.enqueue_failures = 0

    @property
    def pending(self) -> int:
        """Files in the open batch."""
        return len(self._ids)

    def holds(self, file_id: int) -> bool:
        return file_id in self._held

    def deadline(self) -> float | None:
        """When the open batch closes by waiting (None when nothing is open)."""
        return None if self._opened_at is None else self._opened_at + self.limits.max_wait

    def add(self, file_id: int, size: int) -> list[int]:
        """Put one file in the open batch; returns the ids of batches this closed."""
        if file_id in self._held:
            return []
        closed: list[int] = []
        if self._ids and self._bytes + size > self.limits.max_bytes:
            closed += self._close("bytes")
        if not self._ids:
            self._opened_at = self._clock()
        self._ids.append(file_id)
        self._held.add(file_id)
        self._bytes += size
        if len(self._ids) >= self.limits.max_files:
            closed += self._close("count")
        elif self._bytes >= self.limits.max_bytes:
            closed += self._close("bytes")
        return closed

    def poll(self) -> list[int]:
        """Close the open batch if it has waited `max_wait`; returns the closed batch ids."""
        deadline = self.deadline()
        if deadline is not None and self._clock() >= deadline:
            return self._close("wait")
        return []

    def flush(self) -> list[int]:
        """Close the open batch now, whatever its size (at stop, at the end of a backfill)."""
        return self._close("flush") if self._ids else []

    def _close(self, why: str) -> list[int]:
        ids, size = self._ids, self._bytes
        batch_id = self._create(ids)  # raises: the batch stays open, the next poll tries again
        self._ids, self._held, self._bytes, self._opened_at = [], set(), 0, None
        self.batches_created += 1
        try:
            self._enqueue(batch_id)
        except Exception as err:  # noqa: BLE001 - any broker error: the ledger keeps the batch
            self.enqueue_failures += 1
            log.warning(
                "batcher.enqueue_failed", batch_id=batch_id, error=repr(err), files=len(ids)
            )
        else:
            log.info("batcher.batch", batch_id=batch_id, files=len(ids), bytes=size, closed_by=why)
        return [batch_id]

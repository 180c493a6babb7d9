"""Request slots: at most INGEST_WORKER_CONCURRENCY upload requests in flight per worker,
from more processes than that.

An upload task spends a good part of its time outside its request: claiming the
batch, checking its files, recording the answer, moving the files, and between
tasks the pool hands the next message over. With one process per request, every
such moment is a request not in flight, and when the API is slow that is
throughput lost. So a worker runs `PROCESSES_PER_SLOT` processes per slot, and
only the request itself holds one: while one process records its batch, another's
request is in flight.

A slot is an exclusive `flock` on one of N files in a folder of the worker's own
(named by the pool's parent pid, so workers sharing a machine do not share slots).
The kernel lets go of a lock when its holder dies, so a killed process never
strands a slot. Waiting is a short poll over the N files by one waiter at a
time: the others block in the kernel on a `queue` lock (no CPU spent while they
wait, and they come in roughly in turn), and a freed slot is taken within
`POLL_SECONDS`.

The pool is `pool_processes(requests)`: `PROCESSES_PER_SLOT` per request in flight,
plus `CONTROL_PROCESSES` for what the control queue sends the same worker (the
indexing poll, the batch sweep, notifications), so a poll sweep running does
not leave fewer processes than that around the requests.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from reka_ingest.core.constants import WORKER_CONTROL_PROCESSES, WORKER_PROCESSES_PER_SLOT

PROCESSES_PER_SLOT: Final = WORKER_PROCESSES_PER_SLOT
CONTROL_PROCESSES: Final = WORKER_CONTROL_PROCESSES
POLL_SECONDS: Final = 0.005
FOLDER_PREFIX: Final = "reka-ingest-slots-"
QUEUE_FILE: Final = "queue"


def pool_processes(requests: int) -> int:
    """A worker's pool size for `requests` upload requests in flight (see the module)."""
    return requests * PROCESSES_PER_SLOT + CONTROL_PROCESSES


def slots_folder_of(worker_pid: int) -> Path:
    """The slots' folder of the Celery worker (pool parent) with this pid; removed by
    the worker at its shutdown."""
    return Path(tempfile.gettempdir()) / f"{FOLDER_PREFIX}{worker_pid}"


def worker_folder() -> Path:
    """The slots' folder of this process's worker: one per pool parent (the Celery worker)."""
    return slots_folder_of(os.getppid())


class RequestSlots:
    """`count` slots shared by every process (and thread) that uses the same folder."""

    def __init__(self, folder: Path, count: int) -> None:
        if count < 1:
            raise ValueError(f"request slots: count must be >= 1, got {count}")
        self.folder = folder
        self.count = count

    @contextmanager
    def hold(self) -> Iterator[int]:
        """Wait for a free slot and hold it for the block; yields the slot's number."""
        self.folder.mkdir(mode=0o700, exist_ok=True)
        slot, fd = self._take() or self._wait()
        try:
            yield slot
        finally:
            os.close(fd)  # closing the last descriptor releases the lock

    def _take(self) -> tuple[int, int] | None:
        """A free slot now, as (its number, the descriptor holding it), or None."""
        start = os.getpid() % self.count  # processes try different slots first
        for i in range(self.count):
            slot = (start + i) % self.count
            # A descriptor of its own each time: flock conflicts between open files,
            # so two threads of one process exclude each other as processes do.
            fd = self._open(f"slot-{slot}")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return slot, fd
        return None

    def _wait(self) -> tuple[int, int]:
        """Wait in turn: one waiter at a time polls the slots, the others sleep in the
        kernel on the queue lock (let go when its holder takes a slot, or dies)."""
        queue = self._open(QUEUE_FILE)
        try:
            fcntl.flock(queue, fcntl.LOCK_EX)
            while (taken := self._take()) is None:
                time.sleep(POLL_SECONDS)
            return taken
        finally:
            os.close(queue)

    def _open(self, name: str) -> int:
        return os.open(self.folder / name, os.O_RDWR | os.O_CREAT, 0o600)

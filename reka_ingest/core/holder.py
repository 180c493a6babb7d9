"""Which process holds a batch, said so that another process can tell for
certain whether it still runs.

A claim (`reka_ingest.ledger.uploads.claim_batch`) writes `this_process()` on
the batch: the kernel's boot id, the PID namespace, the pid and the process's
start time. A later claim of the batch while its lease still runs asks `gone`:
only a holder of the same boot and the same PID namespace can be judged (there
its pid means the same process, and a reused pid shows a different start time);
from another machine, container or boot the answer is always "cannot tell", and
the lease decides as before. So a worker process that died (killed, out of
memory) on this machine gives its batch back at once, when Celery delivers its
task again, instead of INGEST_BATCH_LEASE later; a live holder is never taken
from.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

_PROC = Path("/proc")


@functools.cache
def _machine() -> str | None:
    """This kernel boot and PID namespace, or None where /proc does not say."""
    try:
        boot = (_PROC / "sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink(_PROC / "self/ns/pid")
    except OSError:
        return None
    return f"{boot}/{namespace}"


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot), or None when it is not
    running: no such pid, or a zombie (dead, not yet reaped)."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # after the name, which may hold spaces
    state, start = fields[0], fields[19]
    return None if state in ("Z", "X") else start


def this_process() -> str | None:
    """This process as a holder: `boot/pid-namespace/pid/start`; None where it cannot
    be told (no /proc), and then only the lease ever frees its batches."""
    machine = _machine()
    start = _start_time(os.getpid())
    if machine is None or start is None:
        return None
    return f"{machine}/{os.getpid()}/{start}"


def gone(holder: str | None) -> bool:
    """Whether `holder` (a `this_process()`) certainly no longer runs. False whenever
    that cannot be told: no holder, a holder of another boot or PID namespace (another
    machine or container), a value not in this form."""
    if not holder:
        return False
    parts = holder.rsplit("/", 2)
    if len(parts) != 3 or _machine() is None:
        return False
    machine, pid, start = parts
    if machine != _machine() or not pid.isdigit():
        return False
    return _start_time(int(pid)) != start

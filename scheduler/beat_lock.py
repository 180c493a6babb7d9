"""Exactly one beat per data folder: its schedule file is taken under a lock.

Two beats on one data folder would write one schedule file at once (a `dbm`
file, which that can corrupt) and send every sweep and poll twice. The beat's
scheduler (`LockedScheduler`, Celery's `beat_scheduler`) takes an exclusive
`flock` on `<schedule file>.lock` before it opens the schedule; a second beat
finds it taken and stops with one line naming the first one's pid, exit 2. The
kernel releases the lock when its process ends, however it ends, so a beat
killed outright never blocks the next one.
"""

from __future__ import annotations

import fcntl
import os
import sys
from typing import Any

from celery.beat import PersistentScheduler

LOCK_SUFFIX = ".lock"
EXIT_TAKEN = 2

# The open lock files of this process (by path), held until the process ends: Celery
# makes the scheduler more than once in one beat.
_held: dict[str, int] = {}


def take(schedule_file: str) -> int | None:
    """Lock `schedule_file`'s lock file for this process: None when it is this
    process's, else the pid of the process that holds it (0 when it cannot be read)."""
    path = os.path.abspath(schedule_file + LOCK_SUFFIX)
    if path in _held:
        return None
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = int(os.pread(fd, 32, 0).split()[0])
        except (OSError, ValueError, IndexError):
            holder = 0
        os.close(fd)
        return holder
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held[path] = fd
    return None


class LockedScheduler(PersistentScheduler):
    """Celery's persistent scheduler, opened only under the data folder's beat lock."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        schedule_file = kwargs.get("schedule_filename") or ""
        if schedule_file:
            holder = take(schedule_file)
            if holder is not None:
                who = f" (pid {holder})" if holder else ""
                print(
                    f"reka-ingest: another beat{who} uses {schedule_file}; exactly one beat"
                    " runs per deployment: stop it first, or give this one another data folder",
                    file=sys.stderr,
                )
                raise SystemExit(EXIT_TAKEN)
        super().__init__(*args, **kwargs)

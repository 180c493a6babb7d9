"""The watcher's floor: a minimal intake loop in plain Python over the same burst.

What any watcher must do for each file of a burst, and nothing else: read its
inotify event (the kernel's own records, through ctypes: no watchdog, no
threads), claim it with one rename into a work folder, hash it once (sha256,
with its size and mtime from the open descriptor) and insert its row into
SQLite (WAL, `synchronous=NORMAL`, like the ledger), `BATCH_ROWS` rows per
`executemany` and commit, or fewer when no event waits. No stability rule, no
sidecar, no batches, no Redis. The watcher cannot beat it; `intake_ratio` is
the watcher's files/s over this loop's, in the same run.

The same loop with the design's two fixed costs (`--design`) is the most a
watcher that keeps the product's rules could reach, whatever its code: each
file is held until `INGEST_SIDECAR_WAIT` (5 s unless set) has passed since it
last changed, by its ctime (one `lstat`, as the watcher holds an image
for a sidecar written after it), and its row goes into the ledger's own schema
(made by the ledger's migrations: its indexes and its count triggers), with
only the columns a queued row must have. Still no stability rule, no sidecar
lookup, no duplicate lookup, no batches, no Redis: a ceiling, not a model.

`run_intake_loop` gives it the burst exactly as `bench.scenarios.run_burst` gives
the watcher: `n` tiny JPEGs written to a staging folder, then renamed into the
inbox one after the other by this process, the clock starting at the first
rename and stopping at the loop's last commit. The loop is its own process
(`python -m bench.intake INBOX WORK DB N TIMEOUT OUT [--design]`), so it never shares a
GIL with the renames; it reports its own CPU time (from its first read on) and
peak RSS (VmHWM).
"""

from __future__ import annotations

import ctypes
import hashlib
import heapq
import json
import math
import os
import resource
import select
import sqlite3
import struct
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any, Final

from bench.procs import MB, peak_rss
from bench.workload import small_jpegs
from reka_ingest.core.settings import IngestSettings

IN_CLOSE_WRITE: Final = 0x00000008
IN_MOVED_TO: Final = 0x00000080
IN_Q_OVERFLOW: Final = 0x00004000
IN_NONBLOCK: Final = os.O_NONBLOCK
IN_CLOEXEC: Final = os.O_CLOEXEC
EVENT: Final = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then name
READ_BYTES: Final = 64 * 1024  # events per read(2): about two thousand
BATCH_ROWS: Final = 500  # rows per executemany and commit (the watcher's group size)
POLL_MS: Final = 100
READY: Final = "ready"

SCHEMA: Final = """CREATE TABLE files (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    work_path TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    sha256 TEXT NOT NULL,
    recorded_at REAL NOT NULL
)"""
INSERT: Final = (
    "INSERT INTO files (path, work_path, size, mtime, sha256, recorded_at)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
# `--design`: queued rows of the ledger's own `files`, the columns they cannot be without,
# many rows a statement as the watcher inserts them (SQLite runs the count triggers far
# slower once per statement, and each row of an executemany is one).
LEDGER_INSERT: Final = (
    "INSERT INTO files (path, work_path, size, mtime, sha256, seen_at, source_root, origin,"
    " index_flag, state, attempts, possible_duplicate, polls, updated_at) VALUES "
)
LEDGER_ROW: Final = "(?, ?, ?, ?, ?, ?, ?, 'event', 1, 'queued', 0, 0, 0, ?)"


def _inotify(folder: str) -> int:
    """An inotify descriptor watching `folder` for files renamed in or closed after writing."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd: int = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "inotify_init1")
    if libc.inotify_add_watch(fd, os.fsencode(folder), IN_MOVED_TO | IN_CLOSE_WRITE) < 0:
        raise OSError(ctypes.get_errno(), f"inotify_add_watch {folder}")
    return fd


def _names(data: bytes) -> tuple[list[bytes], int]:
    """The file names in a read(2) of inotify events, and how many overflows it told of."""
    names: list[bytes] = []
    overflows, offset, end = 0, 0, len(data)
    while offset < end:
        _, mask, _, length = EVENT.unpack_from(data, offset)
        offset += EVENT.size
        if mask & IN_Q_OVERFLOW:
            overflows += 1
        elif length:
            names.append(data[offset : offset + length].rstrip(b"\0"))
        offset += length
    return names, overflows


def _take(inbox: bytes, work: bytes, name: bytes, now: float) -> tuple[Any, ...] | None:
    """Claim one file (a rename), hash it: its row, or None when it was gone."""
    if name.startswith(b".") or name.endswith(b".part"):
        return None
    target = os.path.join(work, name)
    try:
        os.rename(os.path.join(inbox, name), target)
    except FileNotFoundError:
        return None
    fd = os.open(target, os.O_RDONLY)
    try:
        st = os.fstat(fd)
        digest = hashlib.sha256()
        while chunk := os.read(fd, 1024 * 1024):
            digest.update(chunk)
    finally:
        os.close(fd)
    path = os.fsdecode(name)
    return (path, os.fsdecode(target), st.st_size, st.st_mtime, digest.hexdigest(), now)


def _drain(fd: int, pending: deque[bytes]) -> int:
    """Read every event the kernel holds now onto `pending`; how many overflows it told of."""
    overflows = 0
    while True:
        try:
            data = os.read(fd, READ_BYTES)
        except BlockingIOError:
            return overflows
        except InterruptedError:
            continue
        names, lost = _names(data)
        pending.extend(names)
        overflows += lost


def _connect(db: str, *, design: bool) -> sqlite3.Connection:
    """`db` with the loop's table (`design`: the ledger's schema), tuned as the ledger is."""
    pragmas: tuple[str, ...] = ("journal_mode=WAL", "synchronous=NORMAL")
    if design:
        # the --design loop's only: the ledger's migrations (before the clock starts)
        # and its connections' settings
        from reka_ingest.ledger import open_ledger  # noqa: PLC0415
        from reka_ingest.ledger.db import SQLITE_PRAGMAS  # noqa: PLC0415

        open_ledger(f"sqlite:///{db}").dispose()
        pragmas = SQLITE_PRAGMAS
    conn = sqlite3.connect(db, isolation_level=None)
    for pragma in pragmas:
        conn.execute(f"PRAGMA {pragma}")
    if not design:
        conn.execute(SCHEMA)
    return conn


def _held(inbox: bytes, names: deque[bytes], hold: float, waiting: list[Any]) -> None:
    """Move `names` onto the `waiting` heap, each due `hold` s after its ctime (gone: dropped)."""
    while names:
        name = names.popleft()
        try:
            changed = os.lstat(os.path.join(inbox, name)).st_ctime
        except FileNotFoundError:
            continue
        heapq.heappush(waiting, (changed + hold, name))


def loop(
    inbox: str, work: str, db: str, n: int, timeout: float, *, design: bool = False
) -> dict[str, Any]:
    """Take files until `n` rows are in `db` (or `timeout` passes); what happened.

    The kernel's queue is drained into `pending` between every `BATCH_ROWS` files,
    so it never holds more than a batch's worth of a burst; should it overflow all
    the same, the inbox is listed once (as the watcher scans), and a name taken
    twice is simply gone the second time. With `design`, what is drained waits on
    a heap until its hold is over, and rows go into the ledger's schema."""
    conn = _connect(db, design=design)
    hold = IngestSettings().sidecar_wait if design else 0.0  # as the watcher reads it
    root = inbox if design else None
    waiting: list[tuple[float, bytes]] = []  # (due, name): held files, `design` only
    fd = _inotify(inbox)
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    print(READY, flush=True)
    before = resource.getrusage(resource.RUSAGE_SELF)
    inbox_b, work_b = os.fsencode(inbox), os.fsencode(work)
    pending: deque[bytes] = deque()  # names to take now
    arrived = deque[bytes]() if design else pending  # names drained (held first: `design`)
    rows: list[tuple[Any, ...]] = []
    recorded = events = overflows = 0
    last_commit: float | None = None
    deadline = time.monotonic() + timeout

    def commit() -> None:
        nonlocal recorded, last_commit
        conn.execute("BEGIN IMMEDIATE")
        if root is None:
            conn.executemany(INSERT, rows)
        else:
            values = ", ".join([LEDGER_ROW] * len(rows))
            conn.execute(LEDGER_INSERT + values, [v for r in rows for v in (*r, root, r[-1])])
        conn.execute("COMMIT")
        last_commit = time.time()
        recorded += len(rows)
        rows.clear()

    while recorded < n and time.monotonic() < deadline:
        queued = len(arrived)
        lost = _drain(fd, arrived)
        events += len(arrived) - queued
        if lost:
            overflows += lost
            arrived.extend(os.listdir(inbox_b))
        now = time.time()
        if design:
            _held(inbox_b, arrived, hold, waiting)
            while waiting and waiting[0][0] <= now and len(pending) < BATCH_ROWS:
                pending.append(heapq.heappop(waiting)[1])
        if not pending:
            if rows:
                commit()  # nothing more to take now: record what is in hand
            wake = POLL_MS if not waiting else (waiting[0][0] - time.time()) * 1000
            poller.poll(max(0, min(POLL_MS, math.ceil(wake))))
            continue
        for _ in range(min(BATCH_ROWS - len(rows), len(pending))):
            row = _take(inbox_b, work_b, pending.popleft(), now)
            if row is not None:
                rows.append(row)
        if len(rows) >= BATCH_ROWS:
            commit()
    if rows:
        commit()
    os.close(fd)
    conn.close()
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {
        "recorded": recorded,
        "events": events,
        "overflows": overflows,
        "last_commit": last_commit,
        "cpu_s": round(cpu, 3),
        "hold_s": hold,
        # VmHWM, not ru_maxrss: that one carries the parent's peak across fork and exec.
        "peak_rss_mb": round((peak_rss(os.getpid()) or 0) / MB, 1),
    }


def run_intake_loop(n: int, *, root: Path, timeout: float, design: bool = False) -> dict[str, Any]:
    """The loop over a burst of `n` small files, dropped as `run_burst` drops them
    (`design`: with the design's fixed costs, see the module's docstring)."""
    inbox, work, staging = root / "inbox", root / "work", root / "staging"
    for folder in (inbox, work):
        folder.mkdir(parents=True, exist_ok=True)
    db, out = root / "loop.sqlite3", root / "loop-result.json"
    print(f"writing {n} small files for the intake loop")
    files = small_jpegs(staging, n)
    argv = [sys.executable, "-m", "bench.intake"]
    argv += [str(inbox), str(work), str(db), str(n), str(timeout), str(out)]
    argv += ["--design"] if design else []
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != READY:
            raise RuntimeError("the intake loop did not start")
        t0 = time.time()
        for p in files:
            os.rename(p, inbox / p.name)
        dropped = time.time() - t0
        proc.wait(timeout + 30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise TimeoutError(f"the intake loop did not finish in {timeout:.0f} s") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"the intake loop failed (exit {proc.returncode})")
    result = json.loads(out.read_text())
    recorded = result["recorded"]
    seconds = (result["last_commit"] or t0) - t0
    return {
        "files": n,
        "drop_seconds": round(dropped, 3),
        "seconds_to_record_all": round(seconds, 3) if recorded >= n else None,
        "files_per_s": round(recorded / seconds, 1) if seconds > 0 else None,
        "recorded": recorded,
        "missed": n - recorded,
        "overflows": result["overflows"],
        "cpu_s": result["cpu_s"],
        "hold_s": result["hold_s"],
        "peak_rss_mb": result["peak_rss_mb"],
    }


def intake_ratio(burst: dict[str, Any], floor: dict[str, Any]) -> float | None:
    """The watcher's files/s over the loop's (None when either has no rate)."""
    watcher, loop = burst.get("files_per_s"), floor.get("files_per_s")
    if not watcher or not loop:
        return None
    return round(float(watcher) / float(loop), 3)


def main(argv: list[str]) -> int:
    design = "--design" in argv
    inbox, work, db, n, timeout, out = (a for a in argv if a != "--design")
    result = loop(inbox, work, db, int(n), float(timeout), design=design)
    Path(out).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

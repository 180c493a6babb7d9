"""Missed events: a burst of files the watcher cannot read events for (half as
many again as the kernel's event queue holds: 14,288 at the default 16,384) ends
with all recorded, and the watcher says it had to catch up.

Mechanism, honestly: the real `reka-ingest watch` process runs with its
native (inotify) observer. The first files of the burst arrive with events
flowing; then the watcher process is frozen (SIGSTOP) while the rest are
created, so nothing reads the kernel's event queue. Each file makes two queued
events (create, close-after-write), so the queue (`fs.inotify.max_queued_events`,
read here, never changed) overflows for real and the kernel drops the rest.
After SIGCONT, watchdog reads the overflow marker, the watcher scans at once
(`watcher.events_lost`) and its scan finds the files no event reported
(`watcher.scan_found_missed` with a count above 0). The periodic scan would
find them too, later: that path is tested in tests/scheduler/test_watcher.py.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from reka_ingest.ledger import open_ledger
from reka_ingest.ledger.schema import File
from tests.support.service import Service, wait_for

pytestmark = [pytest.mark.slow]

MAX_FILES = 20_000
WITH_EVENTS = 2_000  # created while the watcher reads its events
CAUGHT_UP_WITHIN = 10.0  # seconds from the overflow read to the scan's end
MAX_QUEUED = Path("/proc/sys/fs/inotify/max_queued_events")


@pytest.fixture
def service(tmp_path: Path, redis_url: str) -> Iterator[Service]:
    svc = Service(
        tmp_path,
        redis_url,
        env={"INGEST_SCAN_INTERVAL": "30", "INGEST_BATCH_MAX_FILES": "100"},
    )
    try:
        yield svc
    finally:
        svc.stop()


def records(log: Path) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


@pytest.mark.timeout(120)
def test_a_burst_the_observer_cannot_read_is_caught_by_the_scan(service: Service) -> None:
    queue_size = int(MAX_QUEUED.read_text())
    # Two events a file while the watcher is frozen: 1.5 times the queue, overflowed
    # whatever the timing.
    n = WITH_EVENTS + queue_size * 3 // 4
    if n > MAX_FILES:
        pytest.skip(f"max_queued_events is {queue_size}: a burst of {MAX_FILES} would not do")
    svc = service
    svc.inbox.mkdir(parents=True)
    svc.data_dir.mkdir(parents=True)
    open_ledger(svc.settings().ingest.ledger_url).dispose()
    svc.start_watcher()
    watcher = svc.child("watcher")
    log = svc.data_dir / "logs" / "watcher.log"
    wait_for(
        lambda: log.exists() and any(r["event"] == "watcher.started" for r in records(log)),
        30,
        "the watcher to start",
        on_timeout=svc.diagnose,
    )
    folder = svc.inbox / "burst"
    folder.mkdir()
    time.sleep(0.5)  # the new folder's watch is in place
    started = time.monotonic()
    for i in range(WITH_EVENTS):
        (folder / f"f{i:05d}.jpg").write_bytes(b"burst file %d" % i)
    os.kill(watcher.pid, signal.SIGSTOP)
    try:
        for i in range(WITH_EVENTS, n):
            (folder / f"f{i:05d}.jpg").write_bytes(b"burst file %d" % i)
    finally:
        os.kill(watcher.pid, signal.SIGCONT)

    def recorded() -> int:
        with svc.ledger.read() as s:
            return int(s.scalar(select(func.count()).select_from(File)) or 0)

    wait_for(lambda: recorded() >= n, 90, f"{n} rows", on_timeout=svc.diagnose)
    elapsed = time.monotonic() - started
    assert recorded() == n
    assert not any(folder.iterdir())

    events = records(log)
    names = [r["event"] for r in events]
    assert any("overflow" in n.lower() for n in names), "watchdog saw no overflow"
    assert "watcher.events_lost" in names
    later_scans = [r for r in events if r["event"] == "watcher.scan_found_missed"]
    later_scans = [r for r in later_scans if not r["start_scan"]]
    missed = sum(r["count"] for r in later_scans)
    assert missed > 0, later_scans
    # The scan that followed the overflow came at once, not at the 30 s interval: by
    # the watcher's own log times (how long the burst took to write, on a loaded
    # machine, is not the watcher's doing).
    lost = _seconds(next(r for r in events if r["event"] == "watcher.events_lost")["timestamp"])
    after = [_seconds(r["timestamp"]) - lost for r in later_scans]
    assert [t for t in after if 0 <= t < CAUGHT_UP_WITHIN], (lost, later_scans)
    print(f"{n} recorded in {elapsed:.1f} s; {missed} found by scans after the overflow")


def _seconds(timestamp: str) -> float:
    """A log line's ISO timestamp (`...Z`) in seconds since the epoch."""
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()

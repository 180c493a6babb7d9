"""The watcher killed (SIGKILL) in the middle of a burst of drops, and started
again while the burst goes on.

Whatever the kill interrupted (a file claimed into work/ but not recorded, a
row written but not batched, a batch written but not enqueued), the new
watcher's start (scheduler/recovery.py), its scans and the beat sweep finish
it: every dropped file is recorded exactly once and ends terminal.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from reka_ingest.core.states import FileState
from reka_ingest.ledger.schema import File
from tests.faults.support import (
    FAULT_ENV,
    STANDIN_ENV,
    assert_nothing_lost,
    assert_settled,
    audit,
    check_fix,
    drop_files,
    file_names,
    freeze_tree,
    kill_tree,
    log_events,
    report,
    thaw,
)
from tests.support.service import Service, wait_for

pytestmark = [pytest.mark.slow]

N = 150
WAVES = 10  # the burst: N files in WAVES waves, PAUSE apart
PAUSE = 0.3


@pytest.fixture
def service(tmp_path: Path, redis_url: str, database_url: str) -> Iterator[Service]:
    env = {**FAULT_ENV, "INGEST_DATABASE_URL": database_url}
    svc = Service(tmp_path, redis_url, env=env, standin_env=STANDIN_ENV)
    try:
        yield svc
    finally:
        svc.stop()


def files_in(svc: Service, sweeps: list[dict[str, Any]]) -> int:
    """How many files are in the batches these sweeps made for rows left without one."""
    batches = [b for sweep in sweeps for b in sweep["batches"]]
    with svc.ledger.read() as s:
        return int(s.scalar(select(func.count()).where(File.batch_id.in_(batches))) or 0)


def recorded(svc: Service) -> int:
    with svc.ledger.read() as s:
        return int(s.scalar(select(func.count()).select_from(File)) or 0)


def unbatched(svc: Service) -> int:
    """Rows the watcher wrote but has not put in a batch yet."""
    with svc.ledger.read() as s:
        q = select(func.count()).select_from(File).where(File.batch_id.is_(None))
        return int(s.scalar(q.where(File.state == FileState.QUEUED)) or 0)


def unrecorded_claims(svc: Service) -> int:
    """Images the watcher moved into work/ with no row yet."""
    work = svc.settings().ingest.work_dir
    with svc.ledger.read() as s:
        known = set(s.scalars(select(File.work_path)))
    # os.walk, not rglob: the worker empties claim folders meanwhile (walk skips them).
    return sum(
        1
        for folder, _, names in os.walk(work)
        for name in names
        if name.endswith(".jpg") and os.path.join(folder, name) not in known
    )


def kill_in_the_gap(svc: Service, pid: int, timeout: float) -> dict[str, int]:
    """SIGKILL the watcher at a moment it has moved files into work/ and not yet
    written their rows (the worst gap), well before the burst ends.

    Deterministic: freeze it (SIGSTOP), look; in the gap, kill it frozen;
    otherwise let it run a few milliseconds and look again.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frozen = freeze_tree(pid)
        state = {
            "recorded": recorded(svc),
            "unbatched": unbatched(svc),
            "claimed_unrecorded": unrecorded_claims(svc),
        }
        if state["recorded"] >= N // 5 and state["claimed_unrecorded"] > 0:
            kill_tree(pid)
            return state
        thaw(frozen)
        time.sleep(0.003)
    raise AssertionError(f"never caught the watcher between claim and record\n{svc.diagnose()}")


@pytest.mark.timeout(150)
def test_watcher_killed_during_a_burst_records_each_file_once(
    service: Service, results_file: Path
) -> None:
    svc = service.start()
    wait_for(
        lambda: bool(log_events(svc, "watcher", "watcher.started")),
        30,
        "the watcher to start",
        on_timeout=svc.diagnose,
    )
    started = time.monotonic()
    names = file_names(N, "burst")
    per_wave = N // WAVES

    def burst() -> None:
        for w in range(WAVES):
            drop_files(
                svc.inbox, names[w * per_wave : (w + 1) * per_wave], seed=47_000 + w * per_wave
            )
            time.sleep(PAUSE)

    writer = threading.Thread(target=burst, daemon=True)
    writer.start()
    watcher = svc.child("watcher")
    at_kill = kill_in_the_gap(svc, watcher.pid, timeout=30)
    assert watcher.process.wait(10) == -9
    time.sleep(0.5)  # drops go on with nobody watching
    svc.start_watcher()
    writer.join(30)
    assert not writer.is_alive()

    svc.wait_terminal(N, timeout=90)
    a = audit(svc, "watcher kill -9 in a burst", names, started)
    a.tally.detail["at_kill"] = at_kill
    starts = log_events(svc, "watcher", "watcher.started")
    a.tally.detail["restart"] = {k: starts[-1].get(k) for k in ("recovered", "adopted")}
    check_fix(svc, a)
    report(a.tally, results_file)
    assert at_kill["recorded"] < N, "the kill came after the burst"
    # The kill left files in work/ with no row; the new watcher's start took
    # back exactly those. Rows left without a batch were batched once each: by
    # that start, or before it by the beat sweep (past INGEST_REQUEUE_AFTER +
    # INGEST_BATCH_MAX_WAIT on their own, a slow restart).
    assert at_kill["claimed_unrecorded"] > 0, at_kill
    swept = files_in(svc, log_events(svc, "worker", "sweep_stranded_rows_batched"))
    a.tally.detail["restart"]["swept"] = swept
    assert a.tally.detail["restart"] == {
        "recovered": at_kill["claimed_unrecorded"],
        "adopted": at_kill["unbatched"] - swept,
        "swept": swept,
    }, at_kill
    assert_nothing_lost(a, svc)  # includes: no path recorded twice, no unknown path
    assert_settled(a, svc)
    assert recorded(svc) == N
    assert a.tally.states == {FileState.INDEXED: N}, a.tally.states
    assert not any(p.is_file() for p in svc.inbox.rglob("*")), "files left in the inbox"

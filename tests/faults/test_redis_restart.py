"""Redis stopped in the middle of a run and started again: once with its data
(append-only file, same folder), once without (a fresh folder: every queued
message, every unacknowledged delivery and the budget's keys are gone).

Files are dropped before the stop, while Redis is down (the watcher records
them; it cannot enqueue), and after the start. The ledger is the truth: the
beat sweep sends every batch whose enqueue failed at its next tick (marked
unsent), every queued batch again once it sees that Redis lost its data (its
marker key gone with the rest: `worker.broker_loss`), and every batch whose
lease ran out, so each file ends terminal either way. Nothing waits for
INGEST_REQUEUE_AFTER: both cases run with its default (10 minutes), far past the
test's time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reka_ingest.core.bundled_redis import BundledRedis, free_port
from reka_ingest.core.states import FileState
from tests.faults.support import (
    FAULT_ENV,
    STANDIN_ENV,
    assert_nothing_lost,
    assert_settled,
    audit,
    check_fix,
    drop_files,
    file_names,
    log_events,
    report,
)
from tests.support.service import Service, wait_for

pytestmark = [pytest.mark.slow]

N = 90  # a third before the stop, a third while Redis is down, a third after
DOWN_FOR = 2.0  # more seconds down after the first failed enqueue


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[list[BundledRedis]]:
    """Servers this test starts and stops itself (the session's Redis stays up)."""
    servers: list[BundledRedis] = []
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


# Each Redis case once, each on one of the two ledgers (the ledger is not what this
# drill is about; the PostgreSQL drill restarts the database itself).
@pytest.mark.parametrize(
    ("keep_data", "database_url"),
    [(True, "sqlite"), (False, "postgresql")],
    ids=["with-data-sqlite", "without-data-postgresql"],
    indirect=["database_url"],
)
@pytest.mark.timeout(150)
def test_redis_restarted_mid_run_loses_nothing(
    tmp_path: Path,
    own_redis: list[BundledRedis],
    results_file: Path,
    keep_data: bool,
    database_url: str,
) -> None:
    port = free_port()
    first = BundledRedis(tmp_path / "redis", port, persist=keep_data).start()
    own_redis.append(first)
    # No batch may wait for the lost-message rule: with its data kept no message is
    # lost; without it, the sweep sees the loss and sends every queued batch again.
    env = {**FAULT_ENV, "INGEST_DATABASE_URL": database_url, "INGEST_REQUEUE_AFTER": "600"}
    svc = Service(tmp_path / "svc", first.url, env=env, standin_env=STANDIN_ENV)
    try:
        svc.start()
        started = time.monotonic()
        # Slow answers, so batches are in flight and queued when Redis goes.
        svc.standin_post("/_standin/faults", {"latency": 0.5})
        names = file_names(N, "redis")
        third = N // 3
        dropped = drop_files(svc.inbox, names[:third], seed=45_000)
        wait_for(
            lambda: svc.counts()[FileState.INDEXING] + svc.counts()[FileState.INDEXED] > 0,
            60,
            "the first uploads",
            on_timeout=svc.diagnose,
        )
        first.stop()
        dropped += drop_files(svc.inbox, names[third : 2 * third], seed=45_000 + third)
        # Down until the watcher has recorded and batched files it could not enqueue.
        wait_for(
            lambda: bool(log_events(svc, "watcher", "batcher.enqueue_failed")),
            30,
            "an enqueue to fail",
            on_timeout=svc.diagnose,
        )
        time.sleep(DOWN_FOR)
        if keep_data:
            second = first.start()  # same folder, same append-only file
        else:
            second = BundledRedis(tmp_path / "redis-fresh", port, persist=False).start()
            own_redis.append(second)
        dropped += drop_files(svc.inbox, names[2 * third :], seed=45_000 + 2 * third)
        svc.standin_post("/_standin/faults", {"latency": 0.0})
        svc.wait_terminal(N, timeout=100)

        scenario = f"redis restart {'with' if keep_data else 'without'} data"
        a = audit(svc, scenario, dropped, started)
        check_fix(svc, a)
        report(a.tally, results_file)
        assert_nothing_lost(a, svc)
        assert_settled(a, svc)
        assert a.tally.states == {FileState.INDEXED: N}, a.tally.states
        # The batches whose enqueue failed while Redis was down (and, without its
        # data, the messages it lost) were sent again by the sweep, from the ledger.
        assert a.tally.detail["resent_by_sweep"] > 0, a.tally.detail
    finally:
        svc.stop()

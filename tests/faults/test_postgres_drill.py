"""Many machines, for real: the README's layout for scale on one PostgreSQL ledger.

Watcher, beat and THREE worker nodes (separate `celery worker` processes, each
with its own node name and pool), the stand-in, all on one PostgreSQL ledger
(a fresh database of the session's server). Files are dropped in three waves
(half, a quarter, a quarter); in the middle of the uploads:

1. one worker node is killed with SIGKILL while its requests are in flight at
   the slow stand-in: frozen first (SIGSTOP, sockets open) so the stand-in
   stores the images and answers into a socket nobody reads, then killed (its
   main process first, then its pool children, by pid): the images are on the
   server and the ledger cannot know;
2. PostgreSQL is restarted (`pg_ctl stop -m immediate`, 2 s down as a real
   restart takes, then start on the same socket) while a poll round holds its
   files: every connection every process holds breaks at once, mid
   transaction for some.

Then the rest is dropped. Nothing tells the service what happened: the two
nodes left, the beat sweep and the watcher must carry on by themselves. In the
end every dropped file is final, none is lost, every file whose bytes the
server holds more than once is flagged `possible_duplicate`, and every process
but the killed node is still running (none died of the broken connections).

A poll round whose outcome write (`record_polls`) the outage breaks rides it
out (worker.outage) instead of leaving the files it claimed leased for
POLL_LEASE_SECONDS (120 s, longer than this drill): the drill fails, naming
them, if any file waits for a poll lease.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from reka_ingest.core.queues import TASK_POLL_DUE
from reka_ingest.core.states import FileState
from reka_ingest.ledger.counts import batches_by_state, files_by_state
from reka_ingest.ledger.schema import Batch, File
from tests.faults.support import (
    FAULT_ENV,
    STANDIN_ENV,
    assert_nothing_lost,
    assert_settled,
    audit,
    celery_tasks,
    check_fix,
    drop_files,
    file_names,
    freeze_tree,
    kill_tree,
    log_events,
    report,
    tasks_in_hand,
    thaw,
)
from tests.support.postgres import PostgresCluster
from tests.support.service import Service

pytestmark = [pytest.mark.slow]

SCENARIO = "postgres: 3 workers, kill -9 + db restart"
WORKERS = 3
N = 300  # 30 batches of 10: half before the kill, a quarter before and after the restart
LATENCY = 2.0  # seconds each upload request waits at the stand-in: requests are in flight
DOWN_FOR = 2.0  # seconds PostgreSQL stays down: longer than what is left of a poll round
STUCK_FOR = 10.0  # seconds nothing but leased polls may wait before it counts as stuck


@pytest.fixture
def ledger_url(postgres: PostgresCluster) -> Iterator[str]:
    url = postgres.fresh_database()
    yield url
    postgres.drop(url)


@pytest.fixture
def service(tmp_path: Path, redis_url: str, ledger_url: str) -> Iterator[Service]:
    env = {**FAULT_ENV, "INGEST_DATABASE_URL": ledger_url, "INGEST_WORKER_CONCURRENCY": "2"}
    svc = Service(tmp_path, redis_url, env=env, standin_env=STANDIN_ENV)
    try:
        yield svc
    finally:
        svc.stop()


def uploading(svc: Service) -> int:
    with svc.ledger.read() as s:
        return int(s.scalar(select(func.count()).where(File.state == FileState.UPLOADING)) or 0)


def leased_polls(svc: Service) -> list[str]:
    """Files in `indexing` whose next poll is further out than any poll delay: held by
    a poll round's lease (a round that never wrote its outcome keeps them so)."""
    horizon = time.time() + float(svc.env["INGEST_POLL_MAX_DELAY"]) + 5
    with svc.ledger.read() as s:
        return list(
            s.scalars(
                select(File.path).where(
                    File.state == FileState.INDEXING, File.next_poll_at > horizon
                )
            )
        )


def polling_round(svc: Service) -> bool:
    """A live node is in a poll round that holds files under its lease."""
    polling = any(tasks_in_hand(svc, n, TASK_POLL_DUE) for n in ("worker-1", "worker-3"))
    return polling and bool(leased_polls(svc))


def node_ready(svc: Service, name: str) -> bool:
    """Celery's own "ready." line in the node's log: it consumes from now on."""
    path = svc.data_dir / "logs" / f"{name}.log"
    return path.exists() and any(
        line.startswith("{") and '"celery.apps.worker"' in line and ' ready."' in line
        for line in path.read_text(errors="replace").splitlines()
    )


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def settle(svc: Service, expected: int, timeout: float) -> list[str]:
    """Wait until every file is final (returns []), or until all that is left are
    files held by a poll lease, for STUCK_FOR seconds on end (returns their paths)."""
    deadline = time.monotonic() + timeout
    stuck_since: float | None = None
    while time.monotonic() < deadline:
        c = svc.counts()
        active = c[FileState.QUEUED] + c[FileState.UPLOADING] + c[FileState.INDEXING]
        if sum(c.values()) >= expected and active == 0:
            return []
        held = leased_polls(svc) if active == c[FileState.INDEXING] else []
        if held and len(held) == active:
            stuck_since = stuck_since or time.monotonic()
            if time.monotonic() - stuck_since >= STUCK_FOR:
                return held
        else:
            stuck_since = None
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout} s waiting for files\n{svc.diagnose()}")


def freeze_mid_upload(svc: Service, name: str) -> tuple[list[int], set[str]]:
    """SIGSTOP the worker node `name` (and its pool) while it is in the middle of an
    upload request: a task it has held for half the stand-in's latency, so its
    request is sent and waiting (on a warm node: one that finished an upload
    already). Not while it polls: a poll round killed halfway keeps its files
    for the poll lease (POLL_LEASE_SECONDS, 120 s), longer than this drill.
    Returns the frozen pids and the upload tasks in hand."""
    pid = svc.child(name).pid
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        in_hand, finished = celery_tasks(svc, name)
        first = set(in_hand)
        if first and finished and uploading(svc):
            time.sleep(LATENCY / 2)
            frozen = freeze_tree(pid)
            still = first & set(tasks_in_hand(svc, name))
            if still and not tasks_in_hand(svc, name, TASK_POLL_DUE):
                return frozen, still
            thaw(frozen)  # finished meanwhile, or polling: try again
        time.sleep(0.1)
    raise AssertionError(f"{name} was never seen in the middle of an upload\n{svc.diagnose()}")


@pytest.mark.timeout(120)
def test_three_workers_survive_a_kill_and_a_database_restart(
    service: Service, postgres: PostgresCluster, results_file: Path
) -> None:
    svc = service.start(workers=WORKERS)
    # Every node consuming before the first drop: a node still starting (a busy
    # machine) would see the first wave taken by the others, never mid-upload.
    nodes = [f"worker-{i}" for i in range(1, WORKERS + 1)]
    assert wait_until(lambda: all(node_ready(svc, n) for n in nodes), 60), svc.diagnose()
    started = time.monotonic()
    # Uploads only: a poll round slowed too would hold a node most of the time (a
    # node polling is never frozen, see freeze_mid_upload).
    svc.standin_post("/_standin/faults", {"upload_latency": LATENCY})
    names = file_names(N, "pg")
    half, three_quarters = N // 2, 3 * N // 4
    dropped = drop_files(svc.inbox, names[:half], seed=47_000)

    # worker-2, frozen in the middle of a request, then killed.
    victim = svc.child("worker-2")
    frozen, in_hand = freeze_mid_upload(svc, "worker-2")
    time.sleep(LATENCY + 0.5)  # the stand-in sits out the latency, stores, answers unheard
    killed = kill_tree(victim.pid)
    assert set(frozen) <= set(killed), (frozen, killed)
    assert victim.process.wait(10) == -9
    assert len(killed) >= 2, killed  # the main process and at least one pool child
    dropped += drop_files(svc.inbox, names[half:three_quarters], seed=47_000 + half)

    # PostgreSQL goes down once, hard, while the others upload, poll and record:
    # at the worst moment for the polls, a round holding its files under a lease.
    in_round = wait_until(lambda: polling_round(svc), 20)
    restart_started = time.monotonic()
    with postgres.outage(DOWN_FOR):  # a restart that takes as long as a real one
        pass
    restart_s = time.monotonic() - restart_started
    dropped += drop_files(svc.inbox, names[three_quarters:], seed=47_000 + three_quarters)
    svc.standin_post("/_standin/faults", {"latency": 0.0})
    held = settle(svc, N, timeout=70)

    a = audit(svc, SCENARIO, dropped, started)
    a.tally.detail.update(
        in_hand_at_kill=len(in_hand),
        db_restart_s=round(restart_s, 2),
        restart_in_poll_round=in_round,
        watcher_ledger_errors=len(log_events(svc, "watcher", "recorder.ledger_unavailable")),
        held_by_poll_lease=len(held),
    )
    check_fix(svc, a)
    report(a.tally, results_file)
    dead = sorted(c.name for c in svc.supervisor.dead())
    assert dead == ["worker-2"], f"died besides the killed node: {dead}\n{svc.diagnose()}"
    # The kill landed mid-request: the frozen node's images were stored, unbeknown
    # to the ledger, and sent again by another node (flagged: assert_nothing_lost).
    assert a.tally.uploaded_twice > 0, a.tally
    assert not held, f"files held by a poll lease after the restart: {held}"
    assert_nothing_lost(a, svc)
    assert_settled(a, svc)
    assert_counts_exact(svc)


def assert_counts_exact(svc: Service) -> None:
    """The counts tables (migrations 0005, 0009), written by the triggers of every
    process's statements through the kill and the restart, equal a scan (all read in
    one snapshot: the service still runs)."""
    engine = svc.ledger.engine.execution_options(isolation_level="REPEATABLE READ")
    with Session(engine) as s, s.begin():
        files = s.execute(select(File.state, func.count()).group_by(File.state)).all()
        batches = s.execute(select(Batch.state, func.count()).group_by(Batch.state)).all()
        assert files_by_state(s) == {str(k): int(n) for k, n in files}
        assert batches_by_state(s) == {str(k): int(n) for k, n in batches}

"""`kill -9` of the Celery worker in the middle of a batch upload.

The stand-in is made slow (`latency`) so a request is surely in flight. When
the ledger shows files `uploading`, the worker's main process and its pool
children are frozen (SIGSTOP) with their requests sent; the stand-in finishes
the latency, stores the images and answers into a socket nobody reads; then
every one of those processes is killed (SIGKILL) by pid. This is the worst
moment to die: the images are on the server, and the ledger cannot know. A
new worker starts. Nothing tells the
service what happened: the beat sweep must find the batch whose holder is gone
(a process of this machine that no longer runs: at once, though its lease,
INGEST_BATCH_LEASE, is the default ten minutes) and the batches whose messages
died with the worker (INGEST_REQUEUE_AFTER=5), and send them again; the files
whose request may have gone out are flagged `possible_duplicate`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

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
    report,
    stored_images,
)
from tests.support.service import Service, wait_for

pytestmark = [pytest.mark.slow]

N = 60
LATENCY = 4.0  # seconds each /v1 request waits at the stand-in before its work


@pytest.fixture
def service(tmp_path: Path, redis_url: str, database_url: str) -> Iterator[Service]:
    # The default lease: the killed worker's batch is taken back because its holder
    # is gone, not because a short lease ran out.
    env = {**FAULT_ENV, "INGEST_DATABASE_URL": database_url, "INGEST_BATCH_LEASE": "600"}
    svc = Service(tmp_path, redis_url, env=env, standin_env=STANDIN_ENV)
    try:
        yield svc
    finally:
        svc.stop()


def uploading(svc: Service) -> dict[str, str]:
    """path -> sha256 of the files whose request is (or may be) in flight."""
    with svc.ledger.read() as s:
        rows = s.execute(
            select(File.path, File.sha256).where(File.state == FileState.UPLOADING)
        ).all()
    return {r.path: r.sha256 or "" for r in rows}


@pytest.mark.timeout(150)
def test_worker_killed_mid_upload_loses_nothing(service: Service, results_file: Path) -> None:
    svc = service.start()
    started = time.monotonic()
    svc.standin_post("/_standin/faults", {"latency": LATENCY})
    dropped = drop_files(svc.inbox, file_names(N, "kill"), seed=41_000)

    wait_for(lambda: bool(uploading(svc)), 60, "a batch in flight", on_timeout=svc.diagnose)
    time.sleep(1.0)  # the request is at the stand-in, inside its latency
    worker = svc.child("worker")
    frozen = freeze_tree(worker.pid)
    in_flight = uploading(svc)  # frozen now: nobody is left to change them
    assert in_flight, "the freeze landed outside any request"
    # The stand-in sits out the latency, stores the images and answers, unheard.
    wait_for(
        lambda: set(in_flight.values()) <= set(stored_images(svc).values()),
        LATENCY + 15,
        "the frozen requests to be stored",
        on_timeout=svc.diagnose,
    )
    killed = kill_tree(worker.pid)
    assert set(frozen) <= set(killed), (frozen, killed)
    assert worker.process.wait(10) == -9
    assert len(killed) >= 2, killed  # the main process and at least one pool child

    svc.start_worker("worker-2")
    svc.wait_terminal(N, timeout=90)

    a = audit(svc, "worker kill -9 mid-upload", dropped, started)
    a.tally.detail["in_flight_at_kill"] = len(in_flight)
    rows = {r.path: r for r in svc.files()}  # before check --fix settles the flags
    check_fix(svc, a)
    report(a.tally, results_file)
    assert_nothing_lost(a, svc)
    # The frozen requests were stored: exactly their files went up twice, flagged.
    assert a.tally.uploaded_twice == len(in_flight), a.tally
    assert all(rows[p].possible_duplicate for p in in_flight), [
        p for p in in_flight if not rows[p].possible_duplicate
    ]
    assert all(rows[p].state == FileState.INDEXED for p in dropped), a.tally.states
    # check --fix deleted the extra copy of each: exactly one copy of every dropped
    # file is left on the stand-in, and every possible_duplicate flag is settled.
    assert a.tally.detail["check_fix"]["fixed"].get("extra_copies_deleted") == len(in_flight)
    assert_settled(a, svc)
    assert a.tally.detail["check_fix"]["images_left"] == N, a.tally.detail

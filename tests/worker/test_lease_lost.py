"""A run that lost its batch writes nothing: numbered claims (`ops.Hold`).

A batch's lease can run out while its run waits for a request slot (a slow API,
more upload processes than slots). The beat sweep then sends the batch again
and another run claims it. Before claims were numbered, the first run, once it
got its slot, still marked the files `uploading`, sent them (a second copy,
unflagged) and, when the other run had already moved them to done/, failed
them `file_missing` over their recorded outcome. Real parts: the stand-in on
loopback, real Redis, each ledger; the slot is a real lock held by the test.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from reka_ingest.core.errors import LeaseLost
from reka_ingest.core.states import BatchOutcome, BatchState, FileState, Reason
from reka_ingest.ledger import Ledger
from reka_ingest.ledger.queries import list_files
from reka_ingest.ledger.schema import Batch, File
from reka_ingest.ledger.uploads import (
    Hold,
    claim_batch,
    fail_files,
    finish_batch,
    mark_uploading,
    release_batch,
    split_batch,
)
from reka_ingest.standin.runner import RunningStandin
from tests.support.clock import Clock
from tests.support.images import image_bytes
from tests.worker.conftest import stage
from tests.worker.test_accepted_outcome import uploads_accepted
from worker.runtime import Runtime
from worker.uploader import BatchReport, upload_batch

LEASE = 30.0


def batch_row(ledger: Ledger, batch_id: int) -> Batch:
    with ledger.read() as s:
        return s.execute(select(Batch).where(Batch.id == batch_id)).scalar_one()


def file_rows(ledger: Ledger, batch_id: int) -> list[tuple[str, str | None, int, bool]]:
    with ledger.read() as s:
        rows = s.execute(
            select(File.state, File.reason, File.attempts, File.possible_duplicate)
            .where(File.batch_id == batch_id)
            .order_by(File.id)
        ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)


@pytest.mark.usefixtures("database_url")
def test_a_run_whose_batch_was_claimed_again_while_it_waited_for_a_slot_sends_nothing(
    make_rt: Callable[..., Runtime], standin: RunningStandin, clock: Clock
) -> None:
    overrides = {"worker_concurrency": 1, "batch_lease": LEASE}
    first, second = make_rt(**overrides), make_rt(**overrides)
    # A body of several pieces: the first are on their way when the mark is refused.
    data = {f"cam/slow-{i}.jpg": image_bytes(700 + i, size=(150, 150)) for i in range(32)}
    batch = stage(first, data)
    reports: dict[str, BatchReport] = {}

    def run(name: str, rt: Runtime) -> threading.Thread:
        thread = threading.Thread(target=lambda: reports.update({name: upload_batch(rt, batch)}))
        thread.start()
        return thread

    with first.slots.hold():  # another request holds the one slot: both runs wait
        a = run("first", first)
        wait_for(lambda: batch_row(first.ledger, batch).claim_seq == 1)
        clock.advance(LEASE + 1)  # the first run's lease runs out while it waits
        b = run("second", second)  # the sweep sent the batch again: claimed anew
        wait_for(lambda: batch_row(first.ledger, batch).claim_seq == 2)
    a.join(30)
    b.join(30)

    assert reports["first"].outcome == BatchOutcome.SKIPPED
    assert "no longer holds" in (reports["first"].error or "")
    assert reports["second"].outcome == BatchOutcome.DONE
    assert uploads_accepted(standin) == 1  # one request: no second copy
    rows = {f.path: f for f in list_files(first.ledger)}
    assert {p: r.state for p, r in rows.items()} == dict.fromkeys(data, FileState.INDEXING)
    assert not any(r.possible_duplicate or r.reason for r in rows.values())
    assert all(r.attempts == 1 for r in rows.values())  # marked uploading once
    for r in rows.values():
        assert Path(r.final_path or "").is_relative_to(first.settings.ingest.done_path)
    assert batch_row(first.ledger, batch).state == BatchState.DONE


@pytest.mark.usefixtures("database_url")
def test_every_write_of_a_run_names_its_claim(make_rt: Callable[..., Runtime]) -> None:
    rt = make_rt(batch_lease=LEASE)
    now = rt.clock()
    batch = stage(rt, {f"cam/w-{i}.jpg": image_bytes(800 + i) for i in range(2)})
    old = claim_batch(rt.ledger, batch, now=now, lease=LEASE)
    assert old is not None and old.claim == 1
    ids = [f.id for f in old.files]

    # Nobody claimed it since: its lease ran out, yet the claim still holds it, and
    # the request's start renews the lease (a claim now is turned away).
    later = now + LEASE + 5
    mark_uploading(rt.ledger, ids, now=later, hold=old.hold, lease_until=later + LEASE)
    assert batch_row(rt.ledger, batch).lease_until == later + LEASE
    assert claim_batch(rt.ledger, batch, now=later + 1, lease=LEASE) is None

    new = claim_batch(rt.ledger, batch, now=later + LEASE + 1, lease=LEASE)
    assert new is not None and new.claim == 2 and new.outcome_unknown
    before = (batch_row(rt.ledger, batch).__dict__.copy(), file_rows(rt.ledger, batch))
    missing = Reason.FILE_MISSING
    stale: list[Callable[[], object]] = [
        lambda: mark_uploading(rt.ledger, ids, now=later, hold=old.hold, lease_until=later),
        lambda: release_batch(rt.ledger, batch, now=later, error="x", hold=old.hold),
        lambda: split_batch(rt.ledger, batch, now=later, error="x", hold=old.hold),
        lambda: fail_files(rt.ledger, ids, missing, "x", now=later, hold=old.hold),
        lambda: finish_batch(rt.ledger, batch, now=later, request_id="r", hold=old.hold),
        lambda: fail_files(rt.ledger, ids, missing, "x", now=later, hold=Hold(batch, 7)),
    ]
    for write in stale:
        with pytest.raises(LeaseLost):
            write()
    after = (batch_row(rt.ledger, batch).__dict__.copy(), file_rows(rt.ledger, batch))
    for state in (before[0], after[0]):
        state.pop("_sa_instance_state")
    assert after == before  # nothing written

    # The new claim's writes go through; and once it released the batch, its own
    # claim no longer holds it either (a released batch is not held by anyone).
    release_batch(rt.ledger, batch, now=later, error="passing", hold=new.hold)
    assert batch_row(rt.ledger, batch).state == BatchState.QUEUED
    with pytest.raises(LeaseLost):
        finish_batch(rt.ledger, batch, now=later, request_id=None, hold=new.hold)
    assert claim_batch(rt.ledger, batch, now=later, lease=LEASE).claim == 3  # type: ignore[union-attr]

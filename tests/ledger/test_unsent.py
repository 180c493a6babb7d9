"""A batch whose message could not be sent (the broker down) is sent by the beat
sweep at its next tick, not INGEST_REQUEUE_AFTER later: `reconcile.mark_unsent`
and `send_each`, and the batcher that every taker of files uses, on both ledgers."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from celery import Celery

from reka_ingest.core.bundled_redis import free_port
from reka_ingest.core.queues import send_upload
from reka_ingest.core.settings import load_settings
from reka_ingest.core.states import BatchState
from reka_ingest.ledger import Ledger
from reka_ingest.ledger.intake import Recorded, create_batches, record_files
from reka_ingest.ledger.reconcile import batches_to_send, mark_unsent, send_each
from reka_ingest.ledger.schema import Batch
from reka_ingest.ledger.uploads import claim_batch
from scheduler.batcher import Batcher, BatchLimits, ledger_batchers
from tests.support.clock import Clock
from tests.support.new_files import new_files

REQUEUE_AFTER = 600.0  # the default: a lost message waits this long


def _recorded(ledger: Ledger, n: int, now: float) -> list[Recorded]:
    return record_files(ledger, new_files([10] * n, seen_at=now), now=now)


def _batches(ledger: Ledger, n: int, now: float) -> list[int]:
    """`n` recorded files, a batch each (sent as they were made, at `now`)."""
    rows = _recorded(ledger, n, now)
    return create_batches(ledger, [[r.file_id] for r in rows], now=now)


def _due(ledger: Ledger, now: float) -> list[int]:
    return batches_to_send(ledger, now=now, requeue_after=REQUEUE_AFTER, limit=100)


def _refusing_broker() -> Celery:
    """A real producer app whose broker is a port nothing listens on: a send fails
    at once, as against a Redis that is down."""
    app = Celery("unsent-test", set_as_current=False)
    app.conf.update(
        broker_url=f"redis://127.0.0.1:{free_port()}/0",
        broker_connection_retry=False,
        broker_connection_max_retries=0,
        broker_transport_options={"max_retries": 0},
    )
    return app


def test_a_batch_marked_unsent_is_due_at_once_and_only_once(ledger: Ledger) -> None:
    now = 1000.0
    a, b, c = _batches(ledger, 3, now)
    assert _due(ledger, now + 1) == []  # sent at creation: not due for 10 minutes
    mark_unsent(ledger, [a, c])
    assert _due(ledger, now + 1) == [a, c]
    assert _due(ledger, now + 2) == []  # taken by that sweep: queued at its time again
    assert _due(ledger, now + 2 + REQUEUE_AFTER) == [a, b, c]  # then the lost-message rule


def test_only_a_queued_batch_is_marked(ledger: Ledger) -> None:
    now = 1000.0
    (batch,) = _batches(ledger, 1, now)
    assert claim_batch(ledger, batch, now=now, lease=300.0) is not None  # a worker has it
    mark_unsent(ledger, [batch])
    with ledger.read() as s:
        row = s.get(Batch, batch)
        assert row is not None
        assert (row.state, row.queued_at) == (BatchState.UPLOADING, now)
    assert _due(ledger, now + 1) == []  # its lease holds: not sent twice


def test_send_each_marks_the_batch_that_failed_and_every_one_after_it(ledger: Ledger) -> None:
    now = 1000.0
    ids = _batches(ledger, 4, now)
    sent: list[int] = []

    def send(batch_id: int) -> None:
        if batch_id == ids[2]:
            raise ConnectionError("the broker went away")
        sent.append(batch_id)

    assert send_each(ledger, ids, send) == "ConnectionError"
    assert sent == ids[:2]
    assert _due(ledger, now + 1) == ids[2:]
    assert send_each(ledger, ids, sent.append) is None


def test_a_real_broker_that_refuses_leaves_the_batches_due_at_the_next_tick(
    ledger: Ledger,
) -> None:
    now = 1000.0
    ids = _batches(ledger, 2, now)
    app = _refusing_broker()
    try:
        why = send_each(ledger, ids, lambda batch_id: send_upload(app, batch_id))
    finally:
        app.close()
    assert why is not None
    assert _due(ledger, now + 1) == ids


def test_the_batcher_marks_what_it_could_not_send(ledger: Ledger) -> None:
    clock = Clock(1000.0)
    rows = _recorded(ledger, 5, clock())
    sent: list[int] = []

    def flaky(batch_id: int) -> None:
        if len(sent) == 1:
            sent.append(-batch_id)  # the second send fails
            raise ConnectionError("redis is down")
        sent.append(batch_id)

    settings = load_settings(batch_max_files=2)
    batcher, _ = ledger_batchers(settings.ingest, ledger, flaky, clock)
    made = batcher.add_many((r.file_id, r.size) for r in rows) + batcher.flush()
    assert len(made) == 3 and batcher.enqueue_failures == 1
    failed = -sent[1]
    assert _due(ledger, clock() + 1) == [failed]


@pytest.mark.parametrize("fails", [True, False])
def test_a_batcher_without_a_ledger_hook_still_survives(fails: bool) -> None:
    created: list[Sequence[int]] = []

    def create(ids: Sequence[int]) -> int:
        created.append(list(ids))
        return len(created)

    def enqueue(_: int) -> None:
        if fails:
            raise ConnectionError("down")

    b = Batcher(BatchLimits(1, 10**9, 60), create=create, enqueue=enqueue, clock=Clock(1.0))
    assert b.add(1, 1) == [1]
    assert b.enqueue_failures == (1 if fails else 0)

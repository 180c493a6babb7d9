"""Batching by count, bytes and wait, with a fake clock and recording callables."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from reka_ingest.ledger import Ledger
from reka_ingest.ledger.intake import Recorded, record_files
from reka_ingest.ledger.schema import Batch, File
from scheduler.batcher import Batcher, BatchLimits, ledger_batch_groups, ledger_batches
from tests.support.clock import Clock
from tests.support.new_files import new_files


class Recording:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.sent: list[int] = []

    def create(self, ids: Sequence[int]) -> int:
        self.batches.append(list(ids))
        return len(self.batches)


def make(limits: BatchLimits, clock: Clock) -> tuple[Batcher, Recording]:
    rec = Recording()
    return Batcher(limits, create=rec.create, enqueue=rec.sent.append, clock=clock), rec


def test_closes_by_count() -> None:
    clock = Clock(500.0)
    b, rec = make(BatchLimits(max_files=3, max_bytes=10**9, max_wait=60), clock)
    for i in range(7):
        b.add(i, 10)
    assert rec.batches == [[0, 1, 2], [3, 4, 5]]
    assert rec.sent == [1, 2]
    assert b.pending == 1


def test_closes_before_the_file_that_would_overflow_the_bytes() -> None:
    clock = Clock(500.0)
    b, rec = make(BatchLimits(max_files=100, max_bytes=100, max_wait=60), clock)
    b.add(1, 40)
    b.add(2, 40)
    b.add(3, 40)  # 120 > 100: [1, 2] closes first
    assert rec.batches == [[1, 2]]
    b.add(4, 60)  # exactly full: closes at once
    assert rec.batches == [[1, 2], [3, 4]]
    b.add(5, 500)  # larger than a batch on its own: goes alone
    assert rec.batches[-1] == [5]
    assert b.pending == 0


def test_closes_by_wait_since_the_first_file() -> None:
    clock = Clock(500.0)
    b, rec = make(BatchLimits(max_files=100, max_bytes=10**9, max_wait=2.0), clock)
    assert b.deadline() is None
    b.add(1, 1)
    clock.now += 1.5
    b.add(2, 1)
    assert b.poll() == []
    assert b.deadline() == pytest.approx(502.0)
    clock.now += 0.5
    assert b.poll() == [1]
    assert rec.batches == [[1, 2]]
    assert b.deadline() is None
    assert b.poll() == []


def test_flush_closes_whatever_is_open_and_duplicates_are_ignored() -> None:
    clock = Clock(500.0)
    b, rec = make(BatchLimits(max_files=100, max_bytes=10**9, max_wait=60), clock)
    b.add(1, 1)
    b.add(1, 1)
    assert b.holds(1)
    assert b.flush() == [1]
    assert rec.batches == [[1]]
    assert b.flush() == []


def test_a_failed_enqueue_is_survived_and_the_batch_stays_created() -> None:
    clock = Clock(500.0)
    created: list[list[int]] = []

    def create(ids: Sequence[int]) -> int:
        created.append(list(ids))
        return 42

    def broken(_: int) -> None:
        raise ConnectionError("redis is down")

    b = Batcher(BatchLimits(2, 10**9, 60), create=create, enqueue=broken, clock=clock)
    assert b.add(1, 1) == []
    assert b.add(2, 1) == [42]
    assert created == [[1, 2]] and b.enqueue_failures == 1


def test_a_failed_create_keeps_the_batch_open_for_the_next_poll() -> None:
    clock = Clock(500.0)
    calls = 0

    def flaky(ids: Sequence[int]) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("database is locked")
        return 7

    sent: list[int] = []
    b = Batcher(BatchLimits(100, 10**9, 1.0), create=flaky, enqueue=sent.append, clock=clock)
    b.add(1, 1)
    clock.now += 1
    with pytest.raises(RuntimeError):
        b.poll()
    assert b.pending == 1
    assert b.poll() == [7]
    assert sent == [7]


def recorded(ledger: Ledger, clock: Clock, sizes: list[int]) -> list[Recorded]:
    return record_files(ledger, new_files(sizes, seen_at=0.0), now=clock())


def test_with_the_real_ledger(ledger: Ledger) -> None:
    clock = Clock(500.0)
    rows = recorded(ledger, clock, [10] * 5)
    sent: list[int] = []
    b = Batcher(
        BatchLimits(max_files=3, max_bytes=10**9, max_wait=1),
        create=ledger_batches(ledger, clock),
        enqueue=sent.append,
        clock=clock,
    )
    for r in rows:
        b.add(r.file_id, r.size)
    b.flush()
    assert len(sent) == 2
    with ledger.read() as s:
        by_batch = sorted((f.batch_id, f.id) for f in s.query(File))
    assert [bid for bid, _ in by_batch] == [sent[0]] * 3 + [sent[1]] * 2


def test_add_many_creates_every_batch_it_fills_in_one_call_then_sends_each() -> None:
    clock = Clock(500.0)
    calls: list[list[list[int]]] = []
    sent: list[int] = []

    def create_many(groups: Sequence[Sequence[int]]) -> list[int]:
        calls.append([list(g) for g in groups])
        return [100 + i for i in range(len(groups))]

    def one_at_a_time(ids: Sequence[int]) -> int:
        raise AssertionError("add_many must not create batches one by one")

    b = Batcher(
        BatchLimits(max_files=3, max_bytes=10**9, max_wait=60),
        create=one_at_a_time,
        create_many=create_many,
        enqueue=sent.append,
        clock=clock,
    )
    assert b.add_many((i, 10) for i in range(8)) == [100, 101]
    assert calls == [[[0, 1, 2], [3, 4, 5]]]
    assert sent == [100, 101]
    assert b.pending == 2 and b.holds(7) and not b.holds(0)


def test_a_failed_create_keeps_the_sealed_batches_for_the_next_poll() -> None:
    clock = Clock(500.0)
    attempts = 0
    sent: list[int] = []

    def create_many(groups: Sequence[Sequence[int]]) -> list[int]:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise RuntimeError("database is locked")
        return [len(g) for g in groups]

    b = Batcher(
        BatchLimits(max_files=2, max_bytes=10**9, max_wait=60),
        create=lambda ids: 0,
        create_many=create_many,
        enqueue=sent.append,
        clock=clock,
    )
    with pytest.raises(RuntimeError):
        b.add_many([(1, 1), (2, 1), (3, 1), (4, 1), (5, 1)])
    assert b.pending == 5 and all(b.holds(i) for i in range(1, 6))
    assert b.deadline() == clock.now  # due again at once
    assert b.poll() == [2, 2]
    assert sent == [2, 2] and b.pending == 1


def test_create_batches_with_the_real_ledger_in_one_write(ledger: Ledger) -> None:
    clock = Clock(500.0)
    rows = recorded(ledger, clock, [10 + i for i in range(5)])
    sent: list[int] = []
    b = Batcher(
        BatchLimits(max_files=2, max_bytes=10**9, max_wait=1),
        create=ledger_batches(ledger, clock),
        create_many=ledger_batch_groups(ledger, clock),
        enqueue=sent.append,
        clock=clock,
    )
    b.add_many((r.file_id, r.size) for r in rows)
    b.flush()
    assert len(sent) == 3
    with ledger.read() as s:
        by_batch = sorted((f.batch_id, f.id) for f in s.query(File))
        batches = {x.id: (x.file_count, x.total_bytes, x.state) for x in s.query(Batch)}
    assert [bid for bid, _ in by_batch] == [sent[0]] * 2 + [sent[1]] * 2 + [sent[2]]
    assert batches[sent[0]] == (2, 10 + 11, "queued")
    assert batches[sent[2]] == (1, 14, "queued")

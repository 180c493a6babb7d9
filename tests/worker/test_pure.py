"""Pure pieces: backoff, poll delays, the indexing decision."""

from __future__ import annotations

import random

import pytest

from reka_ingest.core.constants import IndexingStatus
from reka_ingest.core.states import ACTIVE, TERMINAL, FileState, Reason
from worker.backoff import RetryPolicy, backoff, next_poll_delay
from worker.indexing import Decision, decide


def test_backoff_doubles_to_the_cap_without_jitter() -> None:
    waits = [backoff(n, base=1.0, cap=10.0, jitter=False) for n in range(1, 7)]
    assert waits == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_backoff_jitter_stays_in_the_upper_half() -> None:
    rng = random.Random(7)
    for attempt in range(1, 8):
        nominal = backoff(attempt, base=0.5, cap=30.0, jitter=False)
        wait = backoff(attempt, base=0.5, cap=30.0, rng=rng)
        assert nominal / 2 <= wait <= nominal


def test_backoff_rejects_attempt_zero() -> None:
    with pytest.raises(ValueError, match="1-based"):
        backoff(0, base=1, cap=1)


def test_retry_policy_counts_attempts() -> None:
    policy = RetryPolicy(max_attempts=3, base=1, cap=1)
    assert [policy.exhausted(n) for n in (1, 2, 3)] == [False, False, True]


def test_poll_delay_starts_at_initial_and_doubles_to_max() -> None:
    delays, d = [], None
    for _ in range(7):
        d = next_poll_delay(d, initial=2.0, maximum=60.0)
        delays.append(d)
    assert delays == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]


def test_states_partition() -> None:
    assert set(FileState) == TERMINAL | ACTIVE
    assert not TERMINAL & ACTIVE
    assert FileState.INDEXING in ACTIVE and FileState.DUPLICATE in TERMINAL


def _decide(
    status: int, *, index_flag: bool = True, age: float = 0.0, prev: float | None = None
) -> Decision:
    return decide(
        status,
        index_flag=index_flag,
        uploaded_at=1000.0,
        now=1000.0 + age,
        previous_delay=prev,
        initial_delay=2.0,
        max_delay=60.0,
        deadline=3600.0,
    )


def test_decide_maps_each_status() -> None:
    assert _decide(IndexingStatus.INDEXED).state == FileState.INDEXED
    failed = _decide(IndexingStatus.FAILED)
    assert (failed.state, failed.reason) == (FileState.FAILED, Reason.INDEXING_FAILED)
    assert _decide(IndexingStatus.NOT_INDEXED, index_flag=False).state == FileState.STORED


def test_decide_not_ready_schedules_the_next_poll_further_out() -> None:
    first = _decide(IndexingStatus.IN_PROGRESS, age=1.0)
    assert first.state == FileState.INDEXING
    assert (first.poll_delay, first.next_poll_at) == (2.0, 1003.0)
    later = _decide(IndexingStatus.IN_PROGRESS, age=50.0, prev=16.0)
    assert later.poll_delay == 32.0
    # 0 for a file that asked to be indexed, or an unknown value, is "not ready yet".
    assert _decide(IndexingStatus.NOT_INDEXED, index_flag=True).state == FileState.INDEXING
    assert _decide(7).state == FileState.INDEXING


def test_decide_past_the_deadline_is_a_timeout() -> None:
    late = _decide(IndexingStatus.IN_PROGRESS, age=3600.0)
    assert (late.state, late.reason) == (FileState.FAILED, Reason.INDEXING_TIMEOUT)
    assert "3600" in (late.message or "")

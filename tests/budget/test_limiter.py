"""The shared budget against the real bundled Redis: slots, the rolling window,
races between workers, the server's headers, unlimited mode, Redis down."""

from __future__ import annotations

import threading
from collections.abc import Callable

import redis

from reka_ingest.core import constants as c
from reka_ingest.core.bundled_redis import free_port
from reka_ingest.core.constants import RATE_LIMIT_WINDOW_SECONDS as DAY
from reka_ingest.core.errors import RateLimitInfo
from reka_ingest.core.states import WaitReason
from reka_ingest.metrics.budget import budget_words, read_budget
from tests.budget.conftest import T0
from tests.support.clock import Clock
from worker import budget as b
from worker.budget import Budget, Grant, Wait, fingerprint, redis_client


def test_n_slots_then_a_wait_until_the_oldest_request_leaves(
    make_budget: Callable[..., Budget], clock: Clock
) -> None:
    budget = make_budget(per_day=3)
    answers = []
    for step in range(3):
        clock.now = T0 + step * 10
        answers.append(budget.try_acquire())
    assert answers == [Grant(2), Grant(1), Grant(0)]
    clock.now = T0 + 100
    assert budget.try_acquire() == Wait(T0 + DAY, WaitReason.DAILY_LIMIT)
    # Refused requests are not counted: the wait stays the same.
    assert budget.try_acquire() == Wait(T0 + DAY, WaitReason.DAILY_LIMIT)


def test_the_window_rolls_with_the_clock(make_budget: Callable[..., Budget], clock: Clock) -> None:
    budget = make_budget(per_day=2)
    assert isinstance(budget.try_acquire(), Grant)
    clock.now = T0 + 60
    assert isinstance(budget.try_acquire(), Grant)
    clock.now = T0 + DAY - 0.001
    assert budget.try_acquire() == Wait(T0 + DAY, WaitReason.DAILY_LIMIT)
    clock.now = T0 + DAY  # the first request leaves; the second is still counted
    assert budget.try_acquire() == Grant(0)
    assert budget.try_acquire() == Wait(T0 + 60 + DAY, WaitReason.DAILY_LIMIT)
    clock.now = T0 + 60 + DAY
    assert budget.try_acquire() == Grant(0)


def race(budgets: list[Budget]) -> list[Grant | Wait]:
    """Every budget asks at once (each on its own connection, as separate workers do)."""
    barrier = threading.Barrier(len(budgets))
    answers: list[Grant | Wait] = []
    lock = threading.Lock()

    def ask(budget: Budget) -> None:
        barrier.wait()
        answer = budget.try_acquire()
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=ask, args=(budget,)) for budget in budgets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


def test_racing_workers_never_share_the_last_slots(make_budget: Callable[..., Budget]) -> None:
    for slots in (1, 3):
        fp = f"race-{slots}"
        assert isinstance(make_budget(per_day=slots + 1, fp=fp).try_acquire(), Grant)
        answers = race([make_budget(per_day=slots + 1, fp=fp) for _ in range(8)])
        grants = [a for a in answers if isinstance(a, Grant)]
        assert len(grants) == slots
        assert sorted(g.remaining or 0 for g in grants) == list(range(slots))
        assert all(
            a == Wait(T0 + DAY, WaitReason.DAILY_LIMIT) for a in answers if isinstance(a, Wait)
        )


def test_per_second_limit(make_budget: Callable[..., Budget], clock: Clock) -> None:
    budget = make_budget(per_day=0, per_second=2)
    assert budget.try_acquire() == Grant(None)
    clock.now = T0 + 0.25
    assert budget.try_acquire() == Grant(None)
    clock.now = T0 + 0.5
    assert budget.try_acquire() == Wait(T0 + 1, WaitReason.PER_SECOND)
    clock.now = T0 + 1
    assert budget.try_acquire() == Grant(None)


def test_remaining_zero_from_the_server_pauses_every_worker(
    make_budget: Callable[..., Budget], clock: Clock
) -> None:
    one, two = make_budget(per_day=100), make_budget(per_day=100)
    assert one.follow(RateLimitInfo(limit=100, remaining=5, reset_seconds=600)) is None
    assert isinstance(two.try_acquire(), Grant)
    paused = one.follow(RateLimitInfo(limit=100, remaining=0, reset_seconds=600))
    assert paused == T0 + 600
    assert two.try_acquire() == Wait(T0 + 600, WaitReason.SERVER_PAUSE)
    # A shorter pause reported later does not shorten the one in force.
    assert two.follow(RateLimitInfo(remaining=0, reset_seconds=5)) == T0 + 600
    clock.now = T0 + 600
    assert isinstance(two.try_acquire(), Grant)


def test_a_429_retry_after_pauses_every_worker_even_when_unlimited(
    make_budget: Callable[..., Budget], clock: Clock
) -> None:
    one, two = make_budget(per_day=0), make_budget(per_day=0)
    assert two.try_acquire() == Grant(None)
    one.follow(RateLimitInfo(retry_after_seconds=30), rate_limited=True)
    assert two.try_acquire() == Wait(T0 + 30, WaitReason.SERVER_PAUSE)
    assert two.snapshot().paused_until == T0 + 30
    clock.now = T0 + 30
    assert two.try_acquire() == Grant(None)
    # A 429 that names no time still pauses, briefly.
    one.follow(RateLimitInfo(), rate_limited=True)
    assert two.try_acquire() == Wait(clock.now + c.RATE_LIMITED_PAUSE, WaitReason.SERVER_PAUSE)


def test_unlimited_still_counts_what_was_used(
    make_budget: Callable[..., Budget], rclient: redis.Redis[bytes]
) -> None:
    budget = make_budget(per_day=0)
    assert all(budget.try_acquire() == Grant(None) for _ in range(500))
    assert rclient.zcard(b.window_key("fp-test")) == 500
    snap = budget.snapshot()
    assert (snap.limit, snap.used, snap.remaining, snap.refills_at, snap.error) == (
        None,
        500,
        None,
        None,
        None,
    )
    # Every view reads the same, from Redis alone.
    assert read_budget(rclient, now=T0) == snap


def test_snapshot_and_the_published_summary(
    make_budget: Callable[..., Budget], clock: Clock, rclient: redis.Redis[bytes]
) -> None:
    budget = make_budget(per_day=5)
    empty = budget.snapshot()
    assert (empty.limit, empty.used, empty.remaining, empty.refills_at) == (5, 0, 5, None)
    budget.try_acquire()
    clock.now = T0 + 50
    budget.try_acquire()
    snap = budget.snapshot()
    assert (snap.used, snap.remaining, snap.refills_at, snap.paused_until) == (2, 3, T0 + DAY, None)
    # The rule every view reads, under the key they read; the view from it is the same.
    published = {k.decode(): v.decode() for k, v in rclient.hgetall(c.BUDGET_KEY).items()}
    assert published == {"fp": "fp-test", "limit": "5", "per_second": "0", "window": "86400"}
    assert read_budget(rclient, now=T0 + 50) == snap
    assert budget_words(snap, T0 + 50) == (
        "3 of 5 upload requests left; 2 used in the last 24 h; next slot frees in 23h 59m"
    )


def test_keys_name_a_fingerprint_never_the_api_key(
    redis_url: str, rclient: redis.Redis[bytes], clock: Clock
) -> None:
    secret = "sk-live-0123456789abcdef"  # noqa: S105 - made up, to show it never reaches Redis
    fp = fingerprint(secret)
    assert len(fp) == 12 and secret not in fp and fp == fingerprint(secret)
    budget = Budget(redis_client(redis_url), fp=fp, per_day=2, clock=clock)
    budget.try_acquire()
    budget.follow(RateLimitInfo(remaining=0, reset_seconds=9))
    budget.close()
    keys = sorted(k.decode() for k in rclient.keys("*"))
    assert keys == sorted([c.BUDGET_KEY, b.window_key(fp), b.pause_key(fp)])
    assert all(k.startswith(c.BUDGET_KEY) and secret not in k for k in keys)


def test_redis_down_defers_briefly_and_never_raises(clock: Clock) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    budget = Budget(redis_client(dead), fp="fp-down", per_day=100, clock=clock)
    assert budget.try_acquire() == Wait(T0 + c.REDIS_DOWN_WAIT, WaitReason.REDIS_UNAVAILABLE)
    unlimited = Budget(redis_client(dead), fp="fp-down", per_day=0, clock=clock)
    assert unlimited.try_acquire() == Wait(T0 + c.REDIS_DOWN_WAIT, WaitReason.REDIS_UNAVAILABLE)
    assert budget.follow(RateLimitInfo(retry_after_seconds=7), rate_limited=True) == T0 + 7
    snap = budget.snapshot()
    assert snap.error is not None and "did not answer" in snap.error and snap.remaining is None
    budget.close()
    unlimited.close()

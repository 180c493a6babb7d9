"""Retry policy as data, and backoff as a pure function (tested with jitter off)."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int  # attempts in all, the first included
    base: float  # seconds before the second attempt
    cap: float  # never wait longer than this between attempts

    def exhausted(self, attempt: int) -> bool:
        """True once `attempt` (1-based, the one that just failed) was the last allowed."""
        return attempt >= self.max_attempts


def backoff(
    attempt: int,
    *,
    base: float,
    cap: float,
    jitter: bool = True,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based).

    Exponential (base, 2*base, 4*base, ...) up to `cap`; with jitter, "full
    jitter" over the upper half, so many workers that failed together spread out
    but none retries sooner than half the nominal delay.
    """
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    nominal = min(cap, base * 2.0 ** (attempt - 1))
    if not jitter:
        return nominal
    draw = (rng or random).random()
    return nominal / 2 + draw * nominal / 2


def next_poll_delay(previous: float | None, *, initial: float, maximum: float) -> float:
    """Indexing polls: `initial`, then doubling, never past `maximum`."""
    if previous is None or previous <= 0:
        return min(initial, maximum)
    return min(previous * 2, maximum)

"""Rolling per-key request quota, as Reka counts it: N requests per key per window.

One `RollingQuota` per limited endpoint (upload, search). Each key keeps the
times of its counted requests in a deque; a request is allowed while fewer
than `limit` fall inside the window ending now. The clock is injected, so a
test moves time forward and watches the quota recover.

What the headers say (`RateInfo`):
- `limit`: the configured limit; `remaining`: slots left after this request;
- `reset`: whole seconds until the oldest counted request leaves the window
  (a slot frees), 0 when nothing is counted;
- `retry_after`: 0 when allowed, else the same as `reset`.

A limit of 0 means unlimited (Reka's enterprise tier). The headers must still
be present, and a client must never throttle on them, so an unlimited quota
reports `UNLIMITED_REPORTED` as both limit and remaining, reset 0.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from reka_ingest.core.constants import (
    RATELIMIT_LIMIT_HEADER,
    RATELIMIT_REMAINING_HEADER,
    RATELIMIT_RESET_HEADER,
    RETRY_AFTER_HEADER,
)

UNLIMITED_REPORTED: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class RateInfo:
    """The four rate-limit headers of one response."""

    limit: int
    remaining: int
    reset: int
    retry_after: int

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (RATELIMIT_LIMIT_HEADER.encode(), str(self.limit).encode()),
            (RATELIMIT_REMAINING_HEADER.encode(), str(self.remaining).encode()),
            (RATELIMIT_RESET_HEADER.encode(), str(self.reset).encode()),
            (RETRY_AFTER_HEADER.encode(), str(self.retry_after).encode()),
        ]


UNLIMITED: Final = RateInfo(UNLIMITED_REPORTED, UNLIMITED_REPORTED, 0, 0)


class RollingQuota:
    """`limit` requests per key per `window` seconds; 0 = unlimited."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}

    def _live(self, key: str, now: float) -> deque[float]:
        hits = self._hits.setdefault(key, deque())
        horizon = now - self.window
        while hits and hits[0] <= horizon:
            hits.popleft()
        return hits

    def _info(self, hits: deque[float], now: float, allowed: bool) -> RateInfo:
        reset = max(0, math.ceil(hits[0] + self.window - now)) if hits else 0
        return RateInfo(
            limit=self.limit,
            remaining=max(0, self.limit - len(hits)),
            reset=reset,
            retry_after=0 if allowed else max(1, reset),
        )

    @property
    def reported_limit(self) -> int:
        return self.limit if self.limit else UNLIMITED_REPORTED

    def fresh(self) -> RateInfo:
        """The state of a key that has used nothing."""
        return RateInfo(self.limit, self.limit, 0, 0) if self.limit else UNLIMITED

    def take(self, key: str) -> tuple[bool, RateInfo]:
        """Count one request for `key` if a slot is free; say whether it was allowed."""
        if self.limit == 0:
            return True, UNLIMITED
        now = self._clock()
        hits = self._live(key, now)
        if len(hits) >= self.limit:
            return False, self._info(hits, now, allowed=False)
        hits.append(now)
        return True, self._info(hits, now, allowed=True)

    def peek(self, key: str) -> RateInfo:
        """The key's current state, without counting a request."""
        if self.limit == 0:
            return UNLIMITED
        now = self._clock()
        return self._info(self._live(key, now), now, allowed=True)

    def clear(self) -> None:
        self._hits.clear()

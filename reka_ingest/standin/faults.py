"""Fault injection for the /v1 endpoints: 500s, dropped connections, latency, 429 bursts.

One `FaultInjector` per server. Each /v1 request asks it for a `FaultPlan`
before any work is done. Draws come from one seeded `random.Random`, taken
only for knobs that are on, so a test with a seed and a fixed order of
requests sees the same faults every run.

Precedence, most disruptive to the client's budget first: an ongoing 429
burst, a new burst, a 500, a drop. Latency is added to every plan, faulty
or not, and an upload's plan adds `upload_latency` (a slow upload with fast
gets and lists, as when a WAN carries megabytes per request). Index delay
and index failure are faults too but act on images, not requests; see
`reka_ingest.standin.indexing`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum

from reka_ingest.standin.config import DropWhen, FaultKnobs


class Outcome(Enum):
    NONE = "none"
    FAIL = "fail"  # answer 500 server_error
    DROP = "drop"  # close the connection mid-response
    BURST_429 = "burst_429"  # answer 429 with the burst's retry-after


@dataclass(frozen=True, slots=True)
class FaultPlan:
    outcome: Outcome
    delay: float  # seconds to sleep before answering
    drop_when: DropWhen
    retry_after: int  # for BURST_429


class FaultInjector:
    """Decides, request by request, which fault (if any) to inject."""

    def __init__(self, knobs: FaultKnobs, seed: int | None) -> None:
        self.knobs = knobs
        self._seed = seed
        self._rng = random.Random(seed)  # noqa: S311 - fault timing, not security
        self._burst_left = 0

    def reset(self, knobs: FaultKnobs) -> None:
        """Back to the start values, RNG re-seeded, no burst in progress."""
        self.knobs = knobs
        self._rng = random.Random(self._seed)  # noqa: S311 - fault timing, not security
        self._burst_left = 0

    def update(self, changes: dict[str, object]) -> FaultKnobs:
        """Apply a partial change of knobs (validated).

        A burst under way runs its course (capped at a new, shorter length):
        turning the share off stops new bursts, as a drill expects.
        """
        merged = self.knobs.model_dump() | changes
        self.knobs = FaultKnobs.model_validate(merged)
        self._burst_left = min(self._burst_left, self.knobs.burst_429_length - 1)
        return self.knobs

    def _chance(self, share: float) -> bool:
        if share <= 0.0:
            return False
        return share >= 1.0 or self._rng.random() < share

    def plan(self, *, upload: bool = False) -> FaultPlan:
        """The next request's faults; `upload`: it is an upload (`upload_latency` applies)."""
        k = self.knobs
        delay = k.latency + (self._rng.uniform(0.0, k.latency_jitter) if k.latency_jitter else 0.0)
        if upload:
            delay += k.upload_latency
        outcome = Outcome.NONE
        if self._burst_left > 0:
            self._burst_left -= 1
            outcome = Outcome.BURST_429
        elif self._chance(k.burst_429_share):
            self._burst_left = k.burst_429_length - 1
            outcome = Outcome.BURST_429
        elif self._chance(k.fail_share):
            outcome = Outcome.FAIL
        elif self._chance(k.drop_share):
            outcome = Outcome.DROP
        return FaultPlan(outcome, delay, k.drop_when, k.burst_429_retry_after)

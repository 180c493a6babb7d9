"""The one fake clock of the suite: a time the test moves by hand, read by the
worker, the stand-in, the budget and the watcher alike (a fake only where a
real clock cannot show the case: windows, delays, deadlines)."""

from __future__ import annotations


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

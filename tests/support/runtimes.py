"""Worker runtimes for tests that run uploads and polls without Celery: each
against the stand-in and the real Redis, built with setting overrides, all
closed when the test ends."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from reka_ingest.core.settings import Settings
from reka_ingest.ledger import open_ledger
from reka_ingest.standin.runner import RunningStandin
from tests.support.clock import Clock
from worker.runtime import Runtime


@contextmanager
def runtimes(
    make_settings: Callable[..., Settings],
    standin: RunningStandin,
    clock: Clock,
    redis_url: str,
    api_key: str,
) -> Iterator[Callable[..., Runtime]]:
    """A factory of runtimes (overrides by setting name) sharing the test's clock."""
    made: list[Runtime] = []

    def make(**overrides: object) -> Runtime:
        base: dict[str, object] = {
            "api_key": api_key,
            "api_base_url": standin.base_url,
            "redis_url": redis_url,
        }
        settings = make_settings(**(base | overrides))
        runtime = Runtime(settings, open_ledger(settings.ingest.ledger_url), clock=clock)
        made.append(runtime)
        return runtime

    try:
        yield make
    finally:
        for runtime in made:
            runtime.close()

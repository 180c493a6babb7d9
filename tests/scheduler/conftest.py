"""Running the real Watcher on a tmp inbox, and reading back what it recorded."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from reka_ingest.core.settings import IngestSettings, Settings
from reka_ingest.ledger import Ledger
from reka_ingest.ledger.queries import list_files
from reka_ingest.ledger.schema import File
from scheduler.watcher import Watcher

WAIT_SECONDS = 20.0

# Fast but honest defaults for tests: files must still be steady and old enough.
FAST: dict[str, Any] = {
    "stable_interval": 0.2,
    "min_file_age": 0.3,
    "batch_max_wait": 0.2,
    "scan_interval": 600.0,  # only the start scan, unless a test says otherwise
    "sidecar_wait": 0.5,  # images still wait for a sidecar, briefly
}


def wait_for(predicate: Callable[[], bool], timeout: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s")
        time.sleep(0.05)


def files_by_path(ledger: Ledger) -> dict[str, File]:
    return {f.path: f for f in list_files(ledger)}


@pytest.fixture
def fast_settings(make_settings: Callable[..., Settings]) -> Callable[..., IngestSettings]:
    def make(**overrides: Any) -> IngestSettings:
        return make_settings(**{**FAST, **overrides}).ingest

    return make


@pytest.fixture
def running() -> Iterator[Callable[..., Any]]:
    """`with running(watcher):` starts it, waits for the start scan, always stops it."""
    started: list[Watcher] = []

    @contextmanager
    def run(watcher: Watcher) -> Iterator[Watcher]:
        watcher.start()
        started.append(watcher)
        wait_for(lambda: watcher.stats.scans >= 1)
        try:
            yield watcher
        finally:
            watcher.stop()

    yield run
    for w in started:
        w.stop()

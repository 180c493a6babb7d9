"""Fixtures of the worker tests that run uploads and polls without Celery: one
clock for the worker and the stand-in, the stand-in on loopback, and runtimes
(a real ledger on each database, real Redis) built with setting overrides."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reka_ingest.core.settings import Settings
from reka_ingest.core.states import Origin
from reka_ingest.ledger.intake import NewFile, create_batch, record_files
from reka_ingest.ledger.queries import list_files
from reka_ingest.ledger.schema import File
from reka_ingest.standin.config import StandinConfig
from reka_ingest.standin.runner import RunningStandin, serve_in_thread
from tests.support.clock import Clock
from tests.support.runtimes import runtimes
from worker.runtime import Runtime

KEY = "test-key-worker"
_claim_folders = itertools.count()


@pytest.fixture
def clock() -> Clock:
    """One clock for the worker and the stand-in, so a test can move both."""
    return Clock()


@pytest.fixture
def standin(clock: Clock) -> Iterator[RunningStandin]:
    # Indexing takes a moment (on this clock), so uploads answer 1 and the poller decides.
    config = StandinConfig(api_keys=(KEY,), port=0, seed=1, index_delay=1.0)
    with serve_in_thread(config, clock=clock) as server:
        yield server


@pytest.fixture
def make_rt(
    make_settings: Callable[..., Settings],
    standin: RunningStandin,
    clock: Clock,
    redis_url: str,
    database_url: str,
) -> Iterator[Callable[..., Runtime]]:
    """Runtimes against the stand-in, the real Redis and the test's database (each
    test runs on SQLite and on PostgreSQL); overrides by setting name."""
    with runtimes(make_settings, standin, clock, redis_url, KEY) as make:
        yield make


def stage(rt: Runtime, blobs: dict[str, bytes], *, root: Path | None = None) -> int:
    """Files placed as the watcher would (a new claim folder each), or recorded in place
    under `root` as a backfill would; recorded and put in one batch."""
    return create_batch(rt.ledger, record(rt, blobs, root=root), now=rt.clock())


def record(rt: Runtime, blobs: dict[str, bytes], *, root: Path | None = None) -> list[int]:
    """Files placed and recorded as `stage` does, with no batch yet; their row ids."""
    new = []
    for rel, data in blobs.items():
        if root is None:
            path = rt.settings.ingest.work_dir / f"c{next(_claim_folders):06d}" / Path(rel).name
        else:
            path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        new.append(
            NewFile(
                path=rel,
                source_root=str(root or rt.settings.ingest.inbox),
                work_path=str(path),
                origin=Origin.EVENT if root is None else Origin.BACKFILL,
                size=len(data),
                mtime=0.0,
                sha256=hashlib.sha256(data).hexdigest(),
                seen_at=rt.clock(),
            )
        )
    return [r.file_id for r in record_files(rt.ledger, new, now=rt.clock())]


def rows_by_path(rt: Runtime) -> dict[str, File]:
    """The ledger's rows by the path each file was dropped under."""
    return {f.path: f for f in list_files(rt.ledger)}

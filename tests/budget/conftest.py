"""Fixtures of the budget tests: the real bundled Redis, a clock the test moves,
the real stand-in sharing that clock, and a runtime that ties them together."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator

import pytest
import redis

from reka_ingest.core.settings import Settings
from reka_ingest.core.states import Origin
from reka_ingest.ledger.intake import NewFile, create_batch, record_files
from reka_ingest.standin.config import StandinConfig
from reka_ingest.standin.runner import RunningStandin, serve_in_thread
from tests.support.clock import Clock
from tests.support.images import image_bytes
from tests.support.runtimes import runtimes
from worker.budget import Budget, redis_client
from worker.runtime import Runtime

KEY = "test-key-budget"
T0 = 1_000_000.0


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def rclient(redis_url: str) -> Iterator[redis.Redis[bytes]]:
    client = redis_client(redis_url)
    yield client
    client.close()


@pytest.fixture
def make_budget(redis_url: str, clock: Clock) -> Iterator[Callable[..., Budget]]:
    """Budgets on the real Redis, each with its own connection, as separate workers have."""
    made: list[Budget] = []

    def make(per_day: int = 3, per_second: int = 0, fp: str = "fp-test") -> Budget:
        budget = Budget(
            redis_client(redis_url), fp=fp, per_day=per_day, per_second=per_second, clock=clock
        )
        made.append(budget)
        return budget

    yield make
    for budget in made:
        budget.close()


@pytest.fixture
def upload_quota() -> int:
    """The stand-in's own quota per window; a test overrides it to make the server the limit."""
    return 0


@pytest.fixture
def standin(clock: Clock, upload_quota: int) -> Iterator[RunningStandin]:
    config = StandinConfig(
        api_keys=(KEY,), port=0, seed=1, upload_quota=upload_quota, index_delay=1.0
    )
    with serve_in_thread(config, clock=clock) as server:
        yield server


@pytest.fixture
def make_runtime(
    make_settings: Callable[..., Settings],
    standin: RunningStandin,
    clock: Clock,
    redis_url: str,
    database_url: str,
) -> Iterator[Callable[..., Runtime]]:
    """A worker's runtime against the stand-in, the real Redis and the test's database
    (each test runs on SQLite and on PostgreSQL); overrides by setting name."""
    with runtimes(make_settings, standin, clock, redis_url, KEY) as make:
        yield make


def stage_one_per_batch(rt: Runtime, count: int, *, seed: int = 0) -> list[int]:
    """`count` distinct images placed in the work area as the watcher would, one batch each."""
    work = rt.settings.ingest.work_dir
    batches: list[int] = []
    for i in range(count):
        data = image_bytes(seed + i)
        claim = work / f"claim{seed + i:04d}"
        claim.mkdir(parents=True, exist_ok=True)
        path = claim / f"img{seed + i}.jpg"
        path.write_bytes(data)
        new = NewFile(
            path=f"sub/img{seed + i}.jpg",
            source_root=str(rt.settings.ingest.inbox),
            work_path=str(path),
            origin=Origin.EVENT,
            size=len(data),
            mtime=0.0,
            sha256=hashlib.sha256(data).hexdigest(),
            seen_at=rt.clock(),
        )
        recorded = record_files(rt.ledger, [new], now=rt.clock())
        batches.append(create_batch(rt.ledger, [r.file_id for r in recorded], now=rt.clock()))
    return batches

"""The watcher started before its PostgreSQL ledger (compose starting everything
at once, a database restarting) waits for it and then works, instead of dying
at its first query."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.images import write_image
from tests.support.postgres import PostgresCluster
from tests.support.service import Service

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture
def service(tmp_path: Path, redis_url: str, postgres: PostgresCluster) -> Iterator[Service]:
    svc = Service(tmp_path, redis_url, env={"INGEST_DATABASE_URL": postgres.fresh_database()})
    svc.inbox.mkdir(parents=True)
    svc.data_dir.mkdir(parents=True)
    try:
        yield svc
    finally:
        svc.stop()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, svc: Service) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{svc.logs()}")
        time.sleep(0.2)


def test_the_watcher_waits_for_a_database_that_starts_after_it(
    service: Service, postgres: PostgresCluster
) -> None:
    postgres.stop()
    try:
        service.start_watcher()
        write_image(service.inbox / "early.jpg", 1)
        log = service.data_dir / "logs" / "watcher.log"
        wait_until(
            lambda: log.exists() and log.read_text().count("ledger_unavailable_at_start") >= 2,
            30,
            "the watcher to say it waits for the ledger",
            service,
        )
        assert service.child("watcher").process.poll() is None, service.logs()
    finally:
        postgres.start()
    wait_until(lambda: "early.jpg" in {f.path for f in service.files()}, 60, "a row", service)
    assert service.child("watcher").process.poll() is None, service.logs()
    assert "ledger_available" in log.read_text()

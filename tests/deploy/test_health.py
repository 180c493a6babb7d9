"""`reka-ingest health`, the containers' healthcheck, against a real Redis and
ledger: 0 when they answer, 1 with a reason (secrets masked) when not."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from reka_ingest.cli.processes import cli_argv
from reka_ingest.core.bundled_redis import free_port
from reka_ingest.ledger import Ledger


def health(
    tmp_path: Path, redis_url: str, *args: str, database_url: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "INGEST_REDIS_URL": redis_url,
        "INGEST_DATA_DIR": str(tmp_path / "var"),
        "INGEST_LOG_FORMAT": "json",
    }
    if database_url is not None:
        env["INGEST_DATABASE_URL"] = database_url
    return subprocess.run(
        cli_argv("health", *args), env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_healthy_when_redis_and_the_ledger_answer(
    tmp_path: Path, redis_url: str, ledger: Ledger
) -> None:
    done = health(tmp_path, redis_url, database_url=ledger.url)
    assert (done.returncode, done.stdout.strip()) == (0, "healthy"), done.stderr


def test_an_unreachable_postgresql_ledger_is_named_and_its_password_masked(
    tmp_path: Path, redis_url: str
) -> None:
    dead = f"postgresql+psycopg://ingest:pg-secret-41@127.0.0.1:{free_port()}/ingest"
    done = health(tmp_path, redis_url, database_url=dead)
    assert done.returncode == 1
    assert "ledger" in done.stderr, done.stderr
    assert "pg-secret-41" not in done.stdout + done.stderr


def test_unhealthy_names_the_part_and_masks_the_password(tmp_path: Path) -> None:
    dead = f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0"
    done = health(tmp_path, dead)
    assert done.returncode == 1
    assert "unhealthy: redis at redis://:***@127.0.0.1" in done.stderr
    assert "hunter2-secret" not in done.stdout + done.stderr


def test_worker_check_fails_without_a_worker_on_this_host(tmp_path: Path, redis_url: str) -> None:
    done = health(tmp_path, redis_url, "--no-backends", "--worker", "--timeout", "1")
    assert done.returncode == 1
    assert "no Celery worker on" in done.stderr


def test_tcp_and_http_checks(tmp_path: Path, redis_url: str) -> None:
    port = free_port()
    done = health(tmp_path, redis_url, "--no-backends", "--tcp", f"127.0.0.1:{port}")
    assert done.returncode == 1 and f"127.0.0.1:{port}" in done.stderr
    done = health(tmp_path, redis_url, "--no-backends", "--http", f"http://127.0.0.1:{port}/x")
    assert done.returncode == 1
    done = health(tmp_path, redis_url, "--no-backends", "--http", "http://example.com/")
    assert done.returncode == 1 and "loopback only" in done.stderr

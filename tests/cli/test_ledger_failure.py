"""A command whose ledger fails (its database down or missing, its SQLite file
damaged or not a file) says so in one line naming the ledger, never a
traceback and never the database's password, and exits 2; `run` starts nothing
and leaves no record of a run behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from reka_ingest.core.bundled_redis import free_port
from tests.cli.test_no_deployment import READERS
from tests.support.postgres import PostgresCluster

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "pg-pw-Z81k"  # noqa: S105 - a test value the output must never show
# The commands that read a deployment (`metrics --once` reports a ledger that does not
# answer as `up 0`, a page, not an error), and the two that make the ledger.
COMMANDS = [args for args in READERS if args[0] != "metrics"] + [["migrate"], ["run"]]


def run_in(folder: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`reka-ingest ARGS` in `folder`, a real process: the shell's INGEST_/REKA_ settings
    left out, every port it may bind a free one (unless `env` names it), so nothing
    else on the machine (a `run` on the default ports) changes what it says."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "REKA_"))}
    return subprocess.run(
        [sys.executable, "-m", "reka_ingest.cli", *args],
        cwd=folder,
        env=base
        | {
            "PYTHONPATH": str(REPO),
            "INGEST_REDIS_URL": "redis://127.0.0.1:1/0",
            "INGEST_BUNDLED_REDIS_PORT": str(free_port()),
            "INGEST_STANDIN_PORT": str(free_port()),
            "INGEST_FLOWER_PORT": str(free_port()),
            "INGEST_WEB_PORT": str(free_port()),
        }
        | env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_one_clear_line(done: subprocess.CompletedProcess[str], expected: str) -> None:
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout
    assert PASSWORD not in done.stderr + done.stdout
    lines = [line for line in done.stderr.splitlines() if line.startswith("reka-ingest: ")]
    assert len(lines) == 1 and expected in lines[0], done.stderr


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_a_postgresql_ledger_that_does_not_answer_is_one_line_without_its_password(
    tmp_path: Path, args: list[str]
) -> None:
    url = f"postgresql+psycopg://ingest:{PASSWORD}@127.0.0.1:{free_port()}/ledger"
    done = run_in(tmp_path, *args, INGEST_DATABASE_URL=url)
    assert_one_clear_line(done, "the ledger at postgresql+psycopg://ingest:***@127.0.0.1:")
    assert "does not answer: connection failed" in done.stderr
    assert not (tmp_path / "var" / "run.json").exists()  # `run`: no record of a run


def test_a_database_the_server_does_not_have_is_named(
    tmp_path: Path, postgres: PostgresCluster
) -> None:
    url = postgres.url("no_such_ledger")
    for args in (["status"], ["run"]):
        done = run_in(tmp_path, *args, INGEST_DATABASE_URL=url)
        assert_one_clear_line(done, "does not answer")
        assert 'database "no_such_ledger" does not exist' in done.stderr


@pytest.mark.parametrize("args", [["files"], ["status", "--json"], ["run"]], ids=" ".join)
def test_a_damaged_sqlite_ledger_is_named_and_left_as_it_is(
    tmp_path: Path, args: list[str]
) -> None:
    ledger = tmp_path / "var" / "ledger.db"
    ledger.parent.mkdir()
    garbage = os.urandom(8192)
    ledger.write_bytes(garbage)
    done = run_in(tmp_path, *args)
    assert_one_clear_line(done, f"the ledger at sqlite:///{ledger} cannot be used")
    assert "file is not a database" in done.stderr
    assert ledger.read_bytes() == garbage
    assert not (tmp_path / "var" / "run.json").exists()


def test_a_ledger_path_that_is_a_folder_is_named(tmp_path: Path) -> None:
    (tmp_path / "var" / "ledger.db").mkdir(parents=True)
    done = run_in(tmp_path, "status")
    assert_one_clear_line(done, "does not answer: unable to open database file")

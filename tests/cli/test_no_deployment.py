"""A command that reads a deployment, run where nothing has run (the wrong folder,
INGEST_DATA_DIR unset): it says there is no ledger there and how to point it at
one, exits 2, and leaves nothing behind; `plan` goes on without the ledger."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.images import write_image

REPO = Path(__file__).resolve().parents[2]
READERS = [
    ["files"],
    ["files", "--json"],
    ["status"],
    ["status", "--json"],
    ["status", "--watch", "--once"],
    ["retry"],
    ["check"],
    ["delete", "--path", "*", "--yes"],
    ["metrics", "--once"],
]


def run_in(
    folder: Path, *args: str, redis_url: str = "redis://127.0.0.1:1/0"
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "REKA_"))} | {
        "INGEST_REDIS_URL": redis_url
    }
    return subprocess.run(
        [sys.executable, "-m", "reka_ingest.cli", *args],
        cwd=folder,
        env=env | {"PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("args", READERS, ids=" ".join)
def test_a_reading_command_where_nothing_ran_says_so_and_makes_nothing(
    tmp_path: Path, args: list[str]
) -> None:
    done = run_in(tmp_path, *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    ledger = tmp_path / "var" / "ledger.db"
    assert f"no ledger at {ledger}" in done.stderr
    assert "INGEST_DATA_DIR" in done.stderr and "reka-ingest run" in done.stderr
    assert done.stdout == ""
    assert list(tmp_path.iterdir()) == []  # no var/, no empty ledger left behind


def test_health_reports_the_missing_ledger_as_unhealthy(tmp_path: Path, redis_url: str) -> None:
    done = run_in(tmp_path, "health", redis_url=redis_url)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "unhealthy: ledger at sqlite:///" in done.stderr and "not there" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_plan_without_a_ledger_counts_within_the_tree_and_makes_none(tmp_path: Path) -> None:
    tree = tmp_path / "photos"
    write_image(tree / "a.jpg", seed=1)
    write_image(tree / "b.jpg", seed=1)  # the same bytes: a duplicate within the tree
    done = run_in(tmp_path, "plan", str(tree), "--json")
    assert done.returncode == 0, done.stderr
    assert "ledger not read (no ledger at" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]

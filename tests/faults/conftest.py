"""Fault scenarios: where their summary rows go (pytest's tmp dir, never the repo),
and the table of them at the end of the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

RESULTS_NAME = "faults-results.jsonl"
RESULTS = pytest.StashKey[Path]()
FIX_COLUMN = "extra copies left after check --fix"


@pytest.fixture
def results_file(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.getbasetemp() / RESULTS_NAME
    request.config.stash[RESULTS] = path
    return path


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    path = config.stash.get(RESULTS, None)
    if path is None or not path.exists():
        return
    terminalreporter.section("fault scenarios")
    terminalreporter.write_line(
        f"{'scenario':<56} {'dropped':>7} {'terminal':>8} {'lost':>4} "
        f"{'twice':>5} {'flagged':>7} {'wall s':>6}  {FIX_COLUMN}"
    )
    for line in path.read_text().splitlines():
        t = json.loads(line)
        extra = t.get("extra_after_fix")
        terminalreporter.write_line(
            f"{t['scenario']:<56} {t['dropped']:>7} {t['terminal']:>8} {t['lost']:>4} "
            f"{t['uploaded_twice']:>5} {t['flagged']:>7} {t['wall_s']:>6}  "
            f"{'not run' if extra is None else extra:>{len(FIX_COLUMN)}}"
        )
    terminalreporter.write_line(
        f"(rows in {path}; {FIX_COLUMN!r}: copies per sha256 the stand-in holds beyond one, "
        "after each drill's check --fix)"
    )

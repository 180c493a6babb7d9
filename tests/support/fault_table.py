"""The fault scenarios' table: where their rows go (a tmp dir, never the repo),
and the table printed at the end of the run.

The run's first process names the file (RESULTS_ENV) when pytest configures,
before any test starts; pytest-xdist's workers inherit it, so the table the
first process prints gathers every worker's rows. Its hooks live in the
suite's top conftest, the one pytest-xdist's controller loads too.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

RESULTS_NAME = "faults-results.jsonl"
RESULTS_ENV = "REKA_INGEST_FAULT_RESULTS"
FIX_COLUMN = "extra copies left after check --fix"


def name_results_file() -> None:
    if RESULTS_ENV not in os.environ:
        folder = Path(tempfile.mkdtemp(prefix="reka-ingest-faults-"))
        os.environ[RESULTS_ENV] = str(folder / RESULTS_NAME)


def results_file() -> Path:
    return Path(os.environ[RESULTS_ENV])


def print_table(terminalreporter: pytest.TerminalReporter) -> None:
    path = Path(os.environ.get(RESULTS_ENV, "-"))
    if not path.is_file():
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

"""The installed distribution has the design card's rooms and no generic names:
`reka_ingest` (the foundation, the command line, the stand-in), `worker` and
`scheduler`; `cli` and `standin` are not importable, and the arrows hold
(import-linter's contracts in pyproject.toml, run here as `make lint` runs them)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["cli", "standin"])
def test_generic_top_level_names_are_gone(name: str) -> None:
    assert importlib.util.find_spec(name) is None


def test_the_distribution_installs_the_three_rooms() -> None:
    files = importlib.metadata.files("reka-ingest") or []
    tops = {f.parts[0] for f in files if f.suffix == ".py"}
    found = {
        name for name in ("reka_ingest", "worker", "scheduler") if importlib.util.find_spec(name)
    }
    assert found == {"reka_ingest", "worker", "scheduler"}
    assert not tops & {"cli", "standin"}


def test_the_import_contracts_hold() -> None:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint is not None, "import-linter is a dev dependency"
    done = subprocess.run([lint], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-3000:]
    assert " 0 broken" in done.stdout, done.stdout[-3000:]

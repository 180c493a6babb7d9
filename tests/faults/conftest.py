"""Fault scenarios: the file each writes its summary row to (the table is printed
by the suite's top conftest; see tests/support/fault_table.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import fault_table


@pytest.fixture
def results_file() -> Path:
    return fault_table.results_file()

"""`reka-ingest retry --reason` takes only reasons a retry can match: a failed
row's reasons, and `expired`/`deleted` (rows in those states). A duplicate's
(`duplicate_content`) or an excluded file's (`excluded`) never belongs to a
failed row, so asking for it is refused at once instead of "nothing matched".
Real CLI processes (`run_in`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from reka_ingest.core.states import RETRY_REASONS, STATE_REASONS, FileState, Reason
from tests.cli.test_ledger_failure import run_in

NEVER_FAILED = sorted(STATE_REASONS[s] for s in (FileState.DUPLICATE, FileState.EXCLUDED))


def flat(text: str) -> str:
    """The words of a (rich, boxed) CLI message on one line."""
    return " ".join(text.replace("│", " ").split())


@pytest.mark.parametrize("reason", [*NEVER_FAILED, "no_such_reason"])
def test_a_reason_no_retry_can_match_is_refused_naming_the_ones_it_can(
    tmp_path: Path, reason: str
) -> None:
    done = run_in(tmp_path, "retry", "--reason", reason, INGEST_DATA_DIR=str(tmp_path / "var"))
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.startswith("reka-ingest: ")]
    assert len(lines) == 1 and "is not a reason a retry can match" in lines[0], done.stderr
    assert all(r in lines[0] for r in RETRY_REASONS)
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "var").exists()  # refused before anything was opened


def test_help_lists_exactly_the_reasons_a_retry_can_match(tmp_path: Path) -> None:
    done = run_in(tmp_path, "retry", "--help")
    assert done.returncode == 0, done.stderr
    listed = flat(done.stdout).split("One of:", 1)[1].split("--path", 1)[0]
    names = {word.strip(",") for word in listed.split()}
    assert names == {r.value for r in RETRY_REASONS}
    assert Reason.EXPIRED in RETRY_REASONS and Reason.DELETED in RETRY_REASONS
    assert not set(NEVER_FAILED) & RETRY_REASONS

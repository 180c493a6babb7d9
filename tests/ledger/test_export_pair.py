"""`files --csv / --json` as a real process: on SQLite two processes share the rows
(reka_ingest.cli.export_pair); the bytes are the one-process writer's, in order,
with gaps in the ids, state filters and limits; a helper that dies makes the
export fail loudly; a closed stdout ends it as one process would."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from reka_ingest.cli.export import COLUMNS, write_csv, write_json
from reka_ingest.cli.export_pair import WIDTH
from reka_ingest.cli.files import _pair_plan
from reka_ingest.core.settings import Settings
from reka_ingest.core.states import FileState
from reka_ingest.ledger import Ledger
from reka_ingest.ledger.queries import iter_file_chunks
from tests.support.export_rows import fill_files

ROWS = 12_345
GAP = 7  # ids 7, 14, ...: chunks of WIDTH ids hold WIDTH / 7 rows, 18 of them


def fill(ledger: Ledger) -> None:
    fill_files(
        ledger,
        ROWS,
        gap=GAP,
        seen_at=lambda i: 1000.0 + i / 3,
        indexed_at=lambda i: 1010.5 + i / 7,
        extra=lambda i: {"possible_duplicate": i % 3 == 0},
    )


@pytest.fixture
def filled(ledger: Ledger) -> Ledger:
    fill(ledger)
    return ledger


@pytest.fixture
def env(make_settings: Callable[..., Settings], filled: Ledger) -> dict[str, str]:
    s = make_settings()
    return {
        **os.environ,
        "INGEST_DATA_DIR": str(s.ingest.data_dir),
        "INGEST_INBOX": str(s.ingest.inbox),
        "INGEST_DATABASE_URL": s.ingest.ledger_url,
        "INGEST_LOG_LEVEL": "WARNING",
    }


def one_process(ledger: Ledger, fmt: str, state: FileState | None, limit: int | None) -> bytes:
    out = io.StringIO()
    chunks = iter_file_chunks(ledger, COLUMNS, state=state, limit=limit)
    (write_json if fmt == "json" else write_csv)(chunks, out)
    return out.getvalue().encode()


def command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "reka_ingest.cli", "files", *args]


@pytest.mark.parametrize("fmt", ["csv", "json"])
@pytest.mark.parametrize(
    ("state", "limit"),
    [
        (None, None),
        (FileState.FAILED, None),
        (None, 2 * WIDTH + 1),  # ends inside a chunk
        (None, 2 * WIDTH),  # two chunks at most: one process
        (FileState.INDEXED, 11_000),  # more than there are
    ],
)
def test_every_row_in_order_the_one_process_bytes(
    filled: Ledger,
    env: dict[str, str],
    tmp_path: Path,
    *,
    fmt: str,
    state: FileState | None,
    limit: int | None,
) -> None:
    args = [f"--{fmt}"]
    if state is not None:
        args += ["--state", state.value]
    if limit is not None:
        args += ["--limit", str(limit)]
    out = tmp_path / "out"
    with out.open("wb") as fh:
        done = subprocess.run(
            command(args), env=env, stdout=fh, stderr=subprocess.PIPE, timeout=120, check=False
        )
    assert done.returncode == 0, done.stderr.decode()
    assert out.read_bytes() == one_process(filled, fmt, state, limit)


def test_sqlite_takes_two_processes_postgresql_one(filled: Ledger) -> None:
    plan = _pair_plan(filled, "csv", None, None)
    if not filled.is_sqlite:
        assert plan is None
        return
    assert plan is not None
    assert plan.tail == -(-(ROWS * GAP) // WIDTH)
    assert _pair_plan(filled, "csv", None, 2 * WIDTH) is None  # too few rows to share


def _helper_of(proc: subprocess.Popen[bytes]) -> psutil.Process:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        children = psutil.Process(proc.pid).children()
        if children:
            return children[0]
        time.sleep(0.05)
    raise AssertionError("no helper process started")


def test_a_helper_that_dies_fails_the_export_loudly(filled: Ledger, env: dict[str, str]) -> None:
    if not filled.is_sqlite:
        pytest.skip("PostgreSQL exports in one process")
    proc = subprocess.Popen(
        command(["--csv"]), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.read(1000)  # both are writing: the pipe holds them there
        os.kill(_helper_of(proc).pid, signal.SIGKILL)
        rest, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode not in (0, None)
    assert b"helper process" in err and b"incomplete" in err, err
    assert len(first + rest) < len(one_process(filled, "csv", None, None))


def test_a_closed_stdout_ends_both_as_one_process_would(
    filled: Ledger, env: dict[str, str]
) -> None:
    proc = subprocess.Popen(
        command(["--json"]), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.read(1000)
        helper = _helper_of(proc) if filled.is_sqlite else None
        proc.stdout.close()  # `| head -c 1000`
        assert proc.stderr is not None
        err = proc.stderr.read()
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, err  # click's answer to EPIPE, as before
    assert b"Traceback" not in err, err
    if helper is not None:
        with pytest.raises(psutil.NoSuchProcess):
            helper.wait(timeout=10)
            helper.status()

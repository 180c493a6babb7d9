"""The pid file `reka-ingest run` keeps (cli.pid_file) and the parent-death
signal its children get (reka_ingest.core.parent_death), against real processes.

A leftover is ended only when it is still the very process recorded (pid and
start time); a pid the kernel gave to someone else is never signalled; a run
still alive on the same data folder is refused, not attacked.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reka_ingest.cli.pid_file import PID_FILE_NAME, PidFile, boot_id, start_time
from reka_ingest.core.errors import SettingsError

pytestmark = [pytest.mark.timeout(60)]

IGNORES_SIGTERM = (
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


@pytest.fixture
def spawn() -> Iterator[Any]:
    """Start real processes; any left at the end is killed and reaped."""
    started: list[subprocess.Popen[str]] = []

    def start(*argv: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def _gone(proc: subprocess.Popen[str], within: float = 5.0) -> bool:
    """Ended (we reap it here, as its parent, so a zombie does not count as running)."""
    try:
        proc.wait(within)
    except subprocess.TimeoutExpired:
        return False
    return True


def _entry(name: str, proc: subprocess.Popen[str], start: int | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "pid": proc.pid,
        "start": start_time(proc.pid) if start is None else start,
        "argv": [str(a) for a in proc.args],  # type: ignore[union-attr]
    }


def _write(data_dir: Path, owner: dict[str, Any], children: list[dict[str, Any]]) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    record = {"boot_id": boot_id(), "owner": owner, "children": children}
    (data_dir / PID_FILE_NAME).write_text(json.dumps(record))


def _dead_owner() -> dict[str, Any]:
    """An earlier run that has ended (killed: it never removed its file)."""
    run = subprocess.Popen(["sleep", "60"])
    entry = {"name": "run", "pid": run.pid, "start": start_time(run.pid), "argv": run.args}
    run.kill()
    run.wait(10)
    return entry


def test_a_leftover_still_ours_is_ended_and_a_reused_pid_is_not(tmp_path: Path, spawn: Any) -> None:
    ours = spawn("sleep", "60")
    reused = spawn("sleep", "60")  # same pid as recorded, but not the process recorded
    start = start_time(reused.pid)
    assert start is not None
    _write(
        tmp_path,
        _dead_owner(),
        [_entry("redis", ours), _entry("worker", reused, start=start - 1)],
    )

    ended = PidFile(tmp_path).claim(timeout=5)

    assert [m.pid for m in ended] == [ours.pid]
    assert _gone(ours)
    assert reused.poll() is None
    assert not _gone(reused, within=0.5)
    fresh = json.loads((tmp_path / PID_FILE_NAME).read_text())
    assert fresh["children"] == []
    assert fresh["owner"]["start"] == start_time(fresh["owner"]["pid"])


def test_a_leftover_that_ignores_sigterm_is_killed_after_the_bound(
    tmp_path: Path, spawn: Any
) -> None:
    stubborn = spawn(sys.executable, "-c", IGNORES_SIGTERM)
    assert stubborn.stdout is not None
    assert stubborn.stdout.readline().strip() == "ready"
    _write(tmp_path, _dead_owner(), [_entry("flower", stubborn)])

    began = time.monotonic()
    PidFile(tmp_path).claim(timeout=1.0)

    assert _gone(stubborn)
    assert stubborn.returncode == -signal.SIGKILL
    assert time.monotonic() - began >= 1.0


def test_a_run_still_alive_on_the_data_folder_is_refused_not_attacked(
    tmp_path: Path, spawn: Any
) -> None:
    other_run = spawn("sleep", "60")
    its_child = spawn("sleep", "60")
    _write(tmp_path, _entry("run", other_run), [_entry("worker", its_child)])

    with pytest.raises(SettingsError) as info:
        PidFile(tmp_path).claim(timeout=1)

    assert "INGEST_DATA_DIR" in str(info.value)
    assert str(other_run.pid) in str(info.value)
    assert not _gone(its_child, within=0.5)
    assert not _gone(other_run, within=0.1)


def test_a_pid_file_from_another_boot_or_unreadable_is_ignored(tmp_path: Path, spawn: Any) -> None:
    child = spawn("sleep", "60")
    _write(tmp_path, _dead_owner(), [_entry("redis", child)])
    path = tmp_path / PID_FILE_NAME
    record = json.loads(path.read_text())
    path.write_text(json.dumps(record | {"boot_id": "another-boot"}))

    assert PidFile(tmp_path).claim(timeout=1) == []
    assert not _gone(child, within=0.5)

    path.write_text("{ not json")
    assert PidFile(tmp_path).claim(timeout=1) == []
    assert json.loads(path.read_text())["children"] == []


def test_a_child_started_to_die_with_its_parent_ends_when_the_parent_is_killed(
    spawn: Any,
) -> None:
    parent = spawn(
        sys.executable,
        "-c",
        "import subprocess, time\n"
        "from reka_ingest.core.parent_death import die_with_parent\n"
        "child = subprocess.Popen(['sleep', '60'], preexec_fn=die_with_parent(),"
        " start_new_session=True)\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n",
    )
    assert parent.stdout is not None
    child_pid = int(parent.stdout.readline())
    assert start_time(child_pid) is not None

    parent.send_signal(signal.SIGKILL)
    assert _gone(parent)

    deadline = time.monotonic() + 5
    while start_time(child_pid) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    left = start_time(child_pid)
    if left is not None:  # do not leak it; the pid and start time say it is still ours
        subprocess.run(["kill", "-9", str(child_pid)], check=False)
    assert left is None, "the child outlived its killed parent"

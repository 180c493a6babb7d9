"""Exactly one beat per data folder (`scheduler.beat_lock`): a second beat on the
same data folder stops at once with one line naming the first, exit 2; once the
first is gone, even killed outright, the next one starts. Real beat processes
(`reka-ingest beat`, Celery beat) on the session's real Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.test_ledger_failure import REPO

LOCK = "celerybeat-schedule.lock"


def beat(data: Path, redis_url: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "REKA_"))}
    env |= {"PYTHONPATH": str(REPO), "INGEST_DATA_DIR": str(data), "INGEST_REDIS_URL": redis_url}
    return subprocess.Popen(
        [sys.executable, "-m", "reka_ingest.cli", "beat"],
        cwd=data.parent,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def holder(data: Path) -> int | None:
    try:
        return int((data / LOCK).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def wait_holder(data: Path, pid: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while holder(data) != pid:
        assert time.monotonic() < deadline, f"beat {pid} never took the lock"
        time.sleep(0.1)


@pytest.fixture
def beats() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:  # only the processes this test started, by their pid
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


@pytest.mark.timeout(120)
def test_a_second_beat_on_one_data_folder_is_refused_and_the_next_starts(
    tmp_path: Path, redis_url: str, beats: list[subprocess.Popen[str]]
) -> None:
    data = tmp_path / "var"
    data.mkdir()
    first = beat(data, redis_url)
    beats.append(first)
    wait_holder(data, first.pid)

    second = beat(data, redis_url)
    beats.append(second)
    _, err = second.communicate(timeout=60)
    assert second.returncode == 2, err
    lines = [line for line in err.splitlines() if line.startswith("reka-ingest: ")]
    assert len(lines) == 1 and f"another beat (pid {first.pid})" in lines[0], err
    assert "Traceback" not in err
    assert first.poll() is None and holder(data) == first.pid  # the first one goes on

    os.kill(first.pid, signal.SIGKILL)  # no clean stop: the kernel releases its lock
    first.wait(10)
    third = beat(data, redis_url)
    beats.append(third)
    wait_holder(data, third.pid)
    assert third.poll() is None

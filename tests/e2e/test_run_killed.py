"""`reka-ingest run` killed hard (SIGKILL, as the OOM killer or a stuck terminal
would) leaves nothing behind: every process it started, grandchildren too,
ends with it (the parent-death signal); and the next `run` on the same data
folder and ports starts, ending first any child that outlived the old run
(here a redis-server held stopped, so that only the pid file can end it).
Before issue 10 the children lived on and the next run stopped at "port ...
already in use"."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from reka_ingest.cli.pid_file import PID_FILE_NAME
from reka_ingest.core.bundled_redis import free_port
from tests.support.service import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

GONE_WITHIN = 20.0  # seconds for every child of a killed run to end
BANNER_WITHIN = 60.0
SEVEN = 7  # redis, stand-in, worker and its pool process, beat, flower, watcher


def _alive(pid: int) -> bool:
    """Running (a zombie has ended; it only waits for a parent to read its status)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _is_redis(proc: psutil.Process) -> bool:
    try:
        return Path(proc.exe()).name == "redis-server"
    except psutil.Error:
        return False


class Run:
    """One `reka-ingest run` as a real process, its output in a file."""

    def __init__(self, env: dict[str, str], out: Path) -> None:
        self.out = out
        self._file = out.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "reka_ingest.cli", "run"],
            env=env,
            stdout=self._file,
            stderr=subprocess.STDOUT,
        )

    def text(self) -> str:
        return self.out.read_text(errors="replace")

    def wait_for_banner(self) -> None:
        wait_for(
            lambda: "reka-ingest is running" in self.text() or self.process.poll() is not None,
            BANNER_WITHIN,
            "the banner",
            on_timeout=self.text,
        )
        assert "reka-ingest is running" in self.text(), self.text()

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children(recursive=True)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(60)
        self._file.close()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "REKA_", "STANDIN_"))
    }
    return clean | {
        "INGEST_DATA_DIR": str(tmp_path / "var"),
        "INGEST_INBOX": str(tmp_path / "inbox"),
        "INGEST_BUNDLED_REDIS_PORT": str(free_port()),
        "INGEST_FLOWER_PORT": str(free_port()),
        "INGEST_WEB_PORT": str(free_port()),
        "INGEST_STANDIN_PORT": str(free_port()),
        "INGEST_WORKER_CONCURRENCY": "1",
        "INGEST_LOG_FORMAT": "json",
    }


@pytest.fixture
def strays() -> Iterator[list[psutil.Process]]:
    """Processes a test saw; any still running at the end is killed (a failed
    test must not leave a redis-server on a port for the next one)."""
    seen: list[psutil.Process] = []
    yield seen
    for proc in seen:
        try:
            proc.resume()
            proc.kill()
        except psutil.NoSuchProcess:
            pass


def _wait_gone(procs: list[psutil.Process], within: float) -> list[str]:
    """Those of `procs` still running after `within` seconds, as "pid name"."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and any(_alive(p.pid) for p in procs):
        time.sleep(0.2)
    return [f"{p.pid} {_command(p)}" for p in procs if _alive(p.pid)]


def _command(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline()[:5])
    except psutil.Error:
        return "?"


def test_a_killed_run_takes_every_process_it_started_with_it(
    tmp_path: Path, env: dict[str, str], strays: list[psutil.Process]
) -> None:
    run = Run(env, tmp_path / "run.out")
    try:
        run.wait_for_banner()
        # Grandchildren too: the worker's pool process (concurrency 1) makes seven.
        wait_for(lambda: len(run.descendants()) >= SEVEN, 30, "the worker's pool process")
        started = run.descendants()
        strays.extend(started)

        run.process.send_signal(signal.SIGKILL)
        run.process.wait(10)
        left = _wait_gone(started, GONE_WITHIN)
    finally:
        run.close()
    assert not left, f"still running {GONE_WITHIN} s after run was killed: {left}"


def test_the_next_run_ends_what_a_killed_run_left_and_starts(
    tmp_path: Path, env: dict[str, str], strays: list[psutil.Process]
) -> None:
    first = Run(env, tmp_path / "first.out")
    try:
        first.wait_for_banner()
        started = first.descendants()
        strays.extend(started)
        redis = next(p for p in started if _is_redis(p))
        # Held stopped, redis cannot act on the SIGTERM its parent's death sends:
        # it outlives the run and keeps the port, as a hung child would (and the
        # worker and Flower, waiting on it in their shutdown, hang with it).
        redis.suspend()
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(10)
    finally:
        first.close()
    time.sleep(1.0)
    assert _alive(redis.pid)
    recorded = json.loads((tmp_path / "var" / PID_FILE_NAME).read_text())
    assert recorded["owner"]["pid"] == first.process.pid
    by_name = {c["name"]: c for c in recorded["children"]}
    assert set(by_name) == {"redis", "stand-in", "worker", "beat", "flower", "web", "watcher"}
    assert {c["pid"] for c in recorded["children"]} <= {p.pid for p in started}
    assert by_name["redis"]["pid"] == redis.pid

    second = Run(env, tmp_path / "second.out")
    try:
        second.wait_for_banner()
        strays.extend(second.descendants())
        assert f"ended redis (pid {redis.pid})" in second.text()
        assert _wait_gone(started, 1.0) == []
    finally:
        second.process.send_signal(signal.SIGTERM)
        code = second.process.wait(60)
        second.close()
    assert code == 0, second.text()
    assert "stopped." in second.text()
    assert not (tmp_path / "var" / PID_FILE_NAME).exists()

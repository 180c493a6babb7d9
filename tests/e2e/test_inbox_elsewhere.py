"""An inbox on another filesystem than the data folder is refused up front.

A claim is one rename into the data folder's work area, which cannot cross
filesystems. `reka-ingest run` and `reka-ingest watch` say so on stderr, naming
INGEST_INBOX, and exit non-zero before they start anything: no banner, no
redis-server, no ledger, no log folder. (Before, `run` printed its banner,
started everything, then stopped with "watcher (exit 2)", the reason only in
var/logs/watcher.log.)

The second filesystem is a real one: /dev/shm (tmpfs) when it differs from the
test's tmp folder, else a tmpfs mounted for the test (needs root).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from reka_ingest.core.bundled_redis import free_port

pytestmark = [pytest.mark.timeout(120)]

EXIT_WITHIN = 60.0


def _mounted_tmpfs(where: Path) -> bool:
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


@pytest.fixture
def elsewhere(tmp_path: Path) -> Iterator[Path]:
    """An empty folder on a different filesystem than tmp_path."""
    here = os.stat(tmp_path).st_dev
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and os.stat(shm).st_dev != here:
        folder = Path(tempfile.mkdtemp(prefix="reka-ingest-test-", dir=shm))
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    mount_point = tmp_path / "other-fs"
    if shutil.which("mount") and _mounted_tmpfs(mount_point):
        try:
            assert os.stat(mount_point).st_dev != here
            yield mount_point
        finally:
            subprocess.run(["umount", str(mount_point)], check=False)
        return
    pytest.skip("no second filesystem: /dev/shm is on tmp_path's and mounting a tmpfs failed")


def _env(tmp_path: Path, inbox: Path, redis_port: int) -> dict[str, str]:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "REKA_", "STANDIN_"))
    }
    return clean | {
        "INGEST_DATA_DIR": str(tmp_path / "var"),
        "INGEST_INBOX": str(inbox),
        "INGEST_BUNDLED_REDIS_PORT": str(redis_port),
        "INGEST_FLOWER_PORT": str(free_port()),
        "INGEST_WEB_PORT": str(free_port()),
        "INGEST_STANDIN_PORT": str(free_port()),
        "INGEST_LOG_FORMAT": "json",
    }


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _nothing_started(data_dir: Path) -> list[str]:
    """What a start leaves in the data folder that a refused start must not."""
    traces = ("logs", "redis", "ledger.db", "run.json", "celerybeat-schedule")
    return [name for name in traces if (data_dir / name).exists()]


@pytest.mark.parametrize("command", ["run", "watch"])
def test_an_inbox_on_another_filesystem_is_refused_before_anything_starts(
    tmp_path: Path, elsewhere: Path, command: str
) -> None:
    redis_port = free_port()
    env = _env(tmp_path, elsewhere / "inbox", redis_port)
    if command == "watch":
        env["INGEST_REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"  # nothing listens
    done = subprocess.run(
        [sys.executable, "-m", "reka_ingest.cli", command],
        env=env,
        capture_output=True,
        text=True,
        timeout=EXIT_WITHIN,
        check=False,
    )
    assert done.returncode != 0, done.stdout + done.stderr
    assert "INGEST_INBOX" in done.stderr, done.stderr
    assert "same filesystem" in done.stderr, done.stderr
    assert "reka-ingest is running" not in done.stdout, done.stdout
    assert _nothing_started(tmp_path / "var") == [], done.stdout + done.stderr
    assert not _listening(redis_port)

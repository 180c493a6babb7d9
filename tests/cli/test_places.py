"""A command whose data folder refuses writes, or whose port is taken, says so in
one line naming the place or the port, and exits 2: never a traceback, never
only a log line (reka_ingest.core.places).

Real parts: each command is a real process of the CLI; the port is held by a
real socket bound and listening in the test; the read-only folder is a real
one. The suite runs as root, which writes through a mode-0555 folder, so as
root the folder is a tmpfs mounted read-only (EROFS refuses root too); as
another user, a mode-0555 folder.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.test_ledger_failure import run_in


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The command's one `reka-ingest: ...` line, after checking it is all it said wrong."""
    assert done.returncode == 2, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    assert "Traceback" not in done.stdout + done.stderr, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("reka-ingest: ")]
    assert len(lines) == 1, done.stderr
    assert not [line for line in done.stderr.splitlines() if line.startswith("{")], done.stderr
    return lines[0]


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """An empty folder nobody running this test can write to."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(0o755)
        return
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"as root, only a read-only mount refuses writes: {mounted.stderr!r}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port held by a real listening socket for the test's length."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("args", "place"),
    [
        (["migrate"], "ledger.db.migrate.lock"),  # the migration lock, beside the ledger
        (["beat"], ""),  # beat's schedule: checked before Celery takes over
        (["worker"], "work"),  # where its uploads move files from
        (["flower"], ""),  # Flower's database
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_a_read_only_data_folder_is_one_line_naming_it(
    tmp_path: Path, read_only: Path, args: list[str], place: str
) -> None:
    done = run_in(tmp_path, *args, INGEST_DATA_DIR=str(read_only))
    line = one_line(done)
    assert f"cannot write {read_only / place}".rstrip("/") in line, line
    assert ("Read-only file system" in line) or ("Permission denied" in line), line
    assert list(read_only.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["metrics", "--port", "{port}"], {}, "--port"),
        (["web", "--port", "{port}"], {}, "INGEST_WEB_PORT (web --port)"),
        (["flower"], {"INGEST_FLOWER_PORT": "{port}"}, "INGEST_FLOWER_PORT"),
        (["run"], {"INGEST_WEB_PORT": "{port}"}, "INGEST_WEB_PORT"),
        (["run"], {"INGEST_FLOWER_PORT": "{port}"}, "INGEST_FLOWER_PORT"),
    ],
    ids=["metrics", "web", "flower", "run web", "run flower"],
)
def test_a_taken_port_is_one_line_naming_it(
    tmp_path: Path, taken_port: int, args: list[str], env: dict[str, str], named: str
) -> None:
    argv = [a.format(port=taken_port) for a in args]
    done = run_in(
        tmp_path,
        *argv,
        INGEST_DATA_DIR=str(tmp_path / "var"),
        **{k: v.format(port=taken_port) for k, v in env.items()},
    )
    line = one_line(done)
    assert f"{named}: cannot listen on 127.0.0.1:{taken_port}: Address already in use" in line
    assert not (tmp_path / "var" / "run.json").exists()  # `run`: no record of a run

"""`reka-ingest run` as a person uses it: everything on embedded defaults
(bundled Redis, the stand-in server, worker, beat, Flower, watcher); a dropped
file shows as indexed in `reka-ingest status`; SIGTERM leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reka_ingest.cli.pid_file import PID_FILE_NAME
from reka_ingest.core.bundled_redis import free_port
from tests.support.images import image_bytes
from tests.support.service import ledger_counts, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

README = Path(__file__).resolve().parents[2] / "README.md"
BANNER_FIRST = "reka-ingest is running. Ctrl-C stops everything."


def _banner_labels(text: str) -> list[str]:
    """The left column of the banner in `text`: the lines after its first line."""
    lines = text.splitlines()
    start = lines.index(BANNER_FIRST) + 1
    labels = []
    for line in lines[start:]:
        if not line.startswith("  "):
            break
        labels.append(line.strip().split("  ")[0])
    return labels


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes; read its state.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ")[-1][:1] != "Z"


def test_run_starts_everything_and_a_dropped_file_ends_indexed(tmp_path: Path) -> None:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "REKA_", "STANDIN_"))
    }
    env |= {
        "INGEST_DATA_DIR": str(tmp_path / "var"),
        "INGEST_INBOX": str(tmp_path / "inbox"),
        "INGEST_BUNDLED_REDIS_PORT": str(free_port()),
        "INGEST_FLOWER_PORT": str(free_port()),
        "INGEST_WEB_PORT": str(free_port()),
        "INGEST_STANDIN_PORT": str(free_port()),
        "INGEST_MIN_FILE_AGE": "0.3",
        "INGEST_POLL_INITIAL_DELAY": "0.5",
        "INGEST_POLL_SWEEP_INTERVAL": "1",
        "INGEST_LOG_FORMAT": "json",
    }
    out = (tmp_path / "run.out").open("w+b")
    run = subprocess.Popen(
        [sys.executable, "-m", "reka_ingest.cli", "run"],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(
            lambda: b"Drop files into" in (tmp_path / "run.out").read_bytes(),
            60,
            "the banner",
            on_timeout=lambda: (tmp_path / "run.out").read_text(errors="replace"),
        )
        banner = (tmp_path / "run.out").read_text()
        assert str(tmp_path / "inbox") in banner and "stand-in server" in banner
        # The README shows the banner a user will see: the same lines, in order.
        assert _banner_labels(banner) == _banner_labels(README.read_text())

        (tmp_path / "inbox" / "hello.jpg").write_bytes(image_bytes(42))

        wait_for(
            lambda: ledger_counts(tmp_path / "var")["indexed"] == 1,
            120,
            "hello.jpg to be indexed",
            interval=0.25,
        )
        status = subprocess.run(
            [sys.executable, "-m", "reka_ingest.cli", "status", "--json"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        assert json.loads(status.stdout)["files"]["indexed"] == 1, status.stdout
        # Every process it started, from its run record (its log lines are in run.log).
        record = json.loads((tmp_path / "var" / PID_FILE_NAME).read_text())
        pids = {c["pid"] for c in record["children"]}
    finally:
        run.send_signal(signal.SIGTERM)
        code = run.wait(60)
        out.close()
    text = (tmp_path / "run.out").read_text()
    assert code == 0, text
    assert "stopped." in text
    assert len(pids) >= 6  # redis, stand-in, worker, beat, flower, watcher
    time.sleep(0.5)
    assert not [p for p in pids if _alive(p)], text

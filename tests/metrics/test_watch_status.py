"""`reka-ingest status --watch`: the snapshot read from a real ledger and Redis,
the view drawn from it, and Ctrl-C ending a real run of the command cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import redis
from rich.console import Console

from reka_ingest.cli.processes import cli_argv
from reka_ingest.cli.watch_status import Snapshot, render, take_snapshot
from reka_ingest.core.queues import UPLOAD_QUEUE
from reka_ingest.ledger import Ledger, open_ledger
from reka_ingest.ledger.schema import File
from reka_ingest.metrics.budget import duration, publish_rule, window_key
from reka_ingest.metrics.counters import redis_client
from tests.metrics.support import add_file

NOW = 50_000.0


def draw(snap: Snapshot) -> str:
    console = Console(record=True, width=120, color_system=None)
    console.print(render(snap))
    return console.export_text()


def test_the_view_shows_states_rate_eta_budget_and_failures(ledger: Ledger, redis_url: str) -> None:
    for n in range(4):
        add_file(ledger, n, state="queued", seen_at=NOW - 100)
    for n in range(10, 16):
        add_file(ledger, n, state="indexed", seen_at=NOW - 200)
    add_file(ledger, 20, state="failed", reason="not_an_image", seen_at=NOW - 50)
    with ledger.write() as s:
        for f in s.query(File).where(File.state != "queued"):
            f.finished_at = NOW - 30
            if f.state == "failed":
                f.message = "Pillow cannot read it"
    client: redis.Redis[bytes] = redis_client(redis_url)
    client.rpush(UPLOAD_QUEUE, "m1", "m2")
    publish_rule(client, fp="fp-watch", per_day=100, per_second=0)
    # 58 requests in the window, the oldest freeing its slot in 1 h 01 m 40 s.
    client.zadd(window_key("fp-watch"), {f"r{n}": NOW - 86400 + 3700 + n for n in range(58)})
    try:
        snap = take_snapshot(ledger, client, now=NOW)
    finally:
        client.close()
    assert snap.files["queued"] == 4 and snap.files["indexed"] == 6 and snap.total == 11
    assert snap.finished_last_minute == 7
    assert snap.seconds_left == 4 / (7 / 60)
    text = draw(snap)
    for state in ("queued", "uploading", "indexing", "indexed", "stored", "duplicate", "failed"):
        assert state in text
    assert "0.12 files/s (7 in the last minute)" in text
    assert "time to finish  34s" in text
    assert "oldest waiting  1m 40s" in text
    assert f"{UPLOAD_QUEUE} 2" in text
    budget = "42 of 100 upload requests left; 58 used in the last 24 h; next slot frees in 1h 01m"
    assert budget in text
    assert "f20.jpg" in text and "not_an_image" in text and "Pillow cannot read it" in text


def test_without_redis_or_a_budget_the_view_says_so(ledger: Ledger) -> None:
    add_file(ledger, 1, state="queued", seen_at=NOW)
    snap = take_snapshot(ledger, None, now=NOW)
    text = draw(snap)
    assert "Redis did not answer" in text
    assert "unknown (Redis did not answer)" in text
    assert "time to finish  unknown" in text  # nothing finished yet: no rate
    assert "none" in text  # no failures


def test_durations() -> None:
    assert [duration(x) for x in (None, 0, 59.4, 61, 3600 * 5 + 60 * 7)] == [
        "unknown",
        "0s",
        "59s",
        "1m 01s",
        "5h 07m",
    ]


def test_ctrl_c_ends_the_live_view_cleanly(tmp_path: Path, redis_url: str) -> None:
    open_ledger(f"sqlite:///{tmp_path / 'var' / 'ledger.db'}").dispose()
    env = {
        **os.environ,
        "INGEST_REDIS_URL": redis_url,
        "INGEST_DATA_DIR": str(tmp_path / "var"),
        "COLUMNS": "100",
    }
    watcher = redis.Redis.from_url(redis_url)
    clients_before = len(watcher.client_list())
    proc = subprocess.Popen(
        cli_argv("status", "--watch"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        # Drawing (its first snapshot has read Redis: a slow start on a busy machine
        # is not a failure), then a few refreshes.
        deadline = time.monotonic() + 60
        while len(watcher.client_list()) <= clients_before:
            assert proc.poll() is None and time.monotonic() < deadline, "never drew"
            time.sleep(0.1)
        time.sleep(2)
        assert proc.poll() is None  # still drawing
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        watcher.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err
    assert b"reka-ingest status" in out

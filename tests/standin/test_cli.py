"""`reka-ingest fake-api` as a real process: banner, env knobs, flags win, clean stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx

from reka_ingest.core.bundled_redis import free_port
from reka_ingest.core.constants import STANDIN_DEV_API_KEY

START_TIMEOUT = 20.0


def _wait_until_up(url: str, key: str) -> httpx.Response:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            return httpx.get(url, headers={"X-Api-Key": key})
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_fake_api_command_serves_with_env_and_flags() -> None:
    port = free_port()
    env = os.environ | {"STANDIN_UPLOAD_QUOTA": "7", "STANDIN_FAIL_SHARE": "1.0"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reka_ingest.cli",
            "fake-api",
            "--port",
            str(port),
            "--fail-share",
            "0",
            "--upload-latency",
            "0.25",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        response = _wait_until_up(f"http://127.0.0.1:{port}/v1/images", STANDIN_DEV_API_KEY)
        assert response.status_code == 200  # the flag (0) beat the env (1.0)
        assert response.headers["x-ratelimit-requests-limit"] == "7"  # from the env
        faults = httpx.get(
            f"http://127.0.0.1:{port}/_standin/faults",
            headers={"X-Api-Key": STANDIN_DEV_API_KEY},
        ).json()
        assert faults["upload_latency"] == 0.25  # a flag of its own
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert f"http://127.0.0.1:{port}" in out
    assert STANDIN_DEV_API_KEY in out


def test_fake_api_rejects_a_bad_value_naming_flag_and_variable() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "reka_ingest.cli", "fake-api", "--drop-share", "1.5"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "--drop-share / STANDIN_DROP_SHARE" in result.stderr

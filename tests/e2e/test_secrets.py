"""Secrets: the API key and the Redis password appear in no output of a real run.

The whole service runs as processes (stand-in, watcher, Celery worker, beat and
Flower) against a bundled redis-server that requires a password (given to it
on stdin, and to the service only inside INGEST_REDIS_URL), with a distinctive
API key and logs at DEBUG. Then every captured output is searched for both:
- every file the run wrote (each process's stdout+stderr log, redis.log, the
  append-only file, the ledger, Flower's database, beat's schedule),
- every command Redis received (a MONITOR connection for the whole run: the
  Celery messages, task events, counters), with every base64 run decoded too,
  since kombu stores message bodies in base64,
- Flower's API and pages (Flower behind basic auth, whose password is
  searched for too), each process's command line, and the output of
  `reka-ingest config`, `status`, `health` (also with a wrong password, so an
  error message is searched as well).
The run itself proves a password in the URL works: the files are indexed, and
a client without the password is refused.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from reka_ingest.cli.processes import cli_argv, flower_argv, flower_env
from reka_ingest.core.bundled_redis import BundledRedis, free_port
from tests.support.images import image_bytes
from tests.support.service import Service, wait_for

API_KEY = "rk-live-SECRETKEY-4f1d9c2b7e"
PASSWORD = "redisPW-8c3b1f0e9d2a"  # noqa: S105 - a test secret, searched for
FLOWER_AUTH = ("admin", "flowerPW-5e6f7a8b")
SECRETS = (API_KEY.encode(), PASSWORD.encode(), FLOWER_AUTH[1].encode())
B64_RUN = re.compile(rb"[A-Za-z0-9+/]{16,}={0,2}")


class Monitor:
    """Everything Redis receives, raw, from a MONITOR connection in a thread."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(f"AUTH {PASSWORD}\r\nMONITOR\r\n".encode())
        self.sock.settimeout(0.2)
        self.data = bytearray()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                chunk = self.sock.recv(1 << 16)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            self.data += chunk

    def stop(self) -> bytes:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()
        return bytes(self.data)


def decoded(blob: bytes) -> bytes:
    """The blob, its MONITOR escapes undone, plus every base64 run in it decoded."""
    plain = blob.replace(b'\\"', b'"')
    out = [plain]
    for run in B64_RUN.findall(plain):
        try:
            out.append(base64.b64decode(run + b"=" * (-len(run) % 4)))
        except (binascii.Error, ValueError):
            continue
    return b"\n".join(out)


def hits(name: str, blob: bytes) -> list[str]:
    return [f"{name}: {s.decode()}" for s in SECRETS if s in blob]


@pytest.fixture
def protected_redis(tmp_path: Path) -> Iterator[BundledRedis]:
    server = BundledRedis(tmp_path / "redis", free_port(), password=PASSWORD, persist=True)
    with server:
        yield server


def run_cli(env: dict[str, str], *args: str) -> bytes:
    done = subprocess.run(cli_argv(*args), env=env, capture_output=True, timeout=60, check=False)
    return done.stdout + done.stderr


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_no_secret_in_any_output_of_a_real_run(
    tmp_path: Path, protected_redis: BundledRedis
) -> None:
    url = protected_redis.url
    assert PASSWORD in url  # the only way the service learns it
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=protected_redis.port).ping()

    monitor = Monitor(protected_redis.port)
    flower_port = free_port()
    svc = Service(
        tmp_path / "run",
        url,
        env={
            "REKA_API_KEY": API_KEY,
            "INGEST_LOG_LEVEL": "DEBUG",
            "INGEST_FLOWER_PORT": str(flower_port),
            "INGEST_WEB_PORT": str(free_port()),
            "INGEST_STANDIN_PORT": str(free_port()),
            "INGEST_FLOWER_BASIC_AUTH": ":".join(FLOWER_AUTH),
        },
        standin_env={"STANDIN_API_KEYS": API_KEY, "STANDIN_INDEX_DELAY": "0.3"},
    )
    outputs: dict[str, bytes] = {}
    try:
        svc.start()
        settings = svc.settings().ingest
        svc.supervisor.start("flower", flower_argv(settings), svc.env | flower_env(settings))
        for i in range(6):
            (svc.inbox / f"img-{i}.jpg").write_bytes(image_bytes(900 + i))
        (svc.inbox / "notes.jpg").write_text("not a picture")  # a failure on the way
        counts = svc.wait_terminal(7, timeout=90)
        assert counts["indexed"] == 6 and counts["failed"] == 1, counts

        flower = f"http://127.0.0.1:{flower_port}"

        def flower_sees_worker() -> bool:
            try:
                r = httpx.get(f"{flower}/api/workers?refresh=1", auth=FLOWER_AUTH, timeout=10)
            except httpx.HTTPError:
                return False
            return r.status_code == 200 and bool(r.json())

        wait_for(flower_sees_worker, 60, "Flower to see the worker", on_timeout=svc.diagnose)
        workers = httpx.get(f"{flower}/api/workers", auth=FLOWER_AUTH, timeout=20).json()
        for page in (
            "/api/workers?refresh=1",
            "/api/tasks",
            "/",  # the dashboard (workers)
            "/workers",
            *(f"/worker/{name}" for name in workers),  # its stats, conf, broker
            "/tasks",
            "/broker",
            "/metrics",
        ):
            r = httpx.get(f"{flower}{page}", auth=FLOWER_AUTH, timeout=20)
            assert r.status_code == 200, (page, r.status_code)
            outputs[f"flower{page}"] = r.content
        assert b"reka_ingest.upload_batch" in outputs["flower/api/tasks"]  # Flower saw the tasks
        for child in svc.supervisor.children:
            outputs[f"cmdline:{child.name}"] = Path(f"/proc/{child.pid}/cmdline").read_bytes()
        for args in (("config",), ("config", "--json"), ("status", "--json"), ("health",)):
            outputs[f"reka-ingest {' '.join(args)}"] = run_cli(svc.env, *args)
        wrong = url.replace(PASSWORD, PASSWORD[::-1])
        bad_env = svc.env | {"INGEST_REDIS_URL": wrong}
        outputs["health, wrong password"] = run_cli(bad_env, "health")
        assert b"AuthenticationError" in outputs["health, wrong password"]
        assert PASSWORD[::-1].encode() not in outputs["health, wrong password"]
    finally:
        svc.stop()
        outputs["redis MONITOR"] = monitor.stop()

    # The capture is real: it holds the task messages (by batch id) and the events.
    traffic = decoded(outputs["redis MONITOR"])
    assert b"reka_ingest.upload_batch" in traffic and b"task-succeeded" in traffic
    protected_redis.stop()  # flush its files before they are read
    for path in sorted(tmp_path.rglob("*")):
        if path.is_file() and not path.is_symlink():
            outputs[str(path.relative_to(tmp_path))] = path.read_bytes()
    assert any(name.endswith("worker.log") for name in outputs)
    assert any(name.endswith(".aof") or "appendonly" in name for name in outputs), sorted(outputs)

    # The search finds a secret hidden the way kombu would store it (base64 in JSON).
    probe = b'{"body": "' + base64.b64encode(b'[["' + API_KEY.encode() + b'"], {}]') + b'"}'
    assert hits("probe", decoded(probe))
    found = [h for name, blob in outputs.items() for h in hits(name, decoded(blob))]
    assert found == []


def test_flower_refuses_to_start_off_loopback_without_basic_auth(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "INGEST_DATA_DIR": str(tmp_path),
        "INGEST_FLOWER_HOST": "0.0.0.0",  # noqa: S104 - the case under test; nothing binds
        "INGEST_FLOWER_PORT": str(free_port()),
        "INGEST_WEB_PORT": str(free_port()),
        "INGEST_STANDIN_PORT": str(free_port()),
        "INGEST_LOG_FORMAT": "json",
    }
    env.pop("INGEST_FLOWER_BASIC_AUTH", None)
    done = subprocess.run(
        cli_argv("flower"), env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2, done
    assert "INGEST_FLOWER_BASIC_AUTH" in done.stderr
    assert "needs basic auth" in done.stderr
    assert "0.0.0.0" in done.stderr  # noqa: S104 - a message, not a bind

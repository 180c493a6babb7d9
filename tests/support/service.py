"""The whole service as real processes, for end-to-end and fault tests.

`Service` starts the stand-in server, a Celery worker, beat and the watcher
(each a child process we own, ended by pid), against a bundled redis-server
the caller provides, with settings given as environment variables exactly as
an operator would. It reads outcomes from the ledger and from the stand-in's
admin endpoints.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from reka_ingest.cli.processes import (
    STOP_TIMEOUT,
    Supervisor,
    beat_argv,
    cli_argv,
    worker_argv,
)
from reka_ingest.core.bundled_redis import free_port
from reka_ingest.core.settings import load_settings
from reka_ingest.core.states import ACTIVE
from reka_ingest.ledger import Ledger, open_ledger
from reka_ingest.ledger.queries import list_files, summary
from reka_ingest.ledger.schema import Batch, File

API_KEY = "e2e-secret-key-7c41d0"

# Fast enough for tests, same code paths as production.
FAST_ENV = {
    "INGEST_MIN_FILE_AGE": "0.5",
    "INGEST_SIDECAR_WAIT": "1.0",  # images still wait for a late sidecar, briefly
    "INGEST_STABLE_INTERVAL": "0.2",
    "INGEST_BATCH_MAX_WAIT": "1.0",
    "INGEST_POLL_SWEEP_INTERVAL": "1.0",
    "INGEST_POLL_INITIAL_DELAY": "0.5",
    "INGEST_POLL_MAX_DELAY": "2.0",
    "INGEST_SWEEP_INTERVAL": "1.0",
    "INGEST_RETRY_BACKOFF_BASE": "0.5",
    "INGEST_RETRY_BACKOFF_MAX": "2.0",
    "INGEST_SCAN_INTERVAL": "5.0",
    "INGEST_LOG_FORMAT": "json",
    "INGEST_LOG_LEVEL": "INFO",
}


class Service:
    def __init__(
        self,
        root: Path,
        redis_url: str,
        *,
        env: dict[str, str] | None = None,
        standin_env: dict[str, str] | None = None,
    ) -> None:
        self.root = root
        self.inbox = root / "inbox"
        self.data_dir = root / "var"
        self.standin_port = free_port()
        self.base_url = f"http://127.0.0.1:{self.standin_port}"
        self.env = {
            **os.environ,
            **FAST_ENV,
            "INGEST_INBOX": str(self.inbox),
            "INGEST_DATA_DIR": str(self.data_dir),
            "INGEST_REDIS_URL": redis_url,
            "REKA_API_KEY": API_KEY,
            "REKA_API_BASE_URL": self.base_url,
            **(env or {}),
        }
        self.standin_env = {"STANDIN_API_KEYS": API_KEY, "STANDIN_SEED": "7", **(standin_env or {})}
        self.supervisor = Supervisor(self.data_dir / "logs")
        self._ledger: Ledger | None = None

    # --- processes --------------------------------------------------------

    def settings(self) -> Any:
        keys = {k: v for k, v in self.env.items() if k.startswith(("INGEST_", "REKA_"))}
        saved = {k: os.environ.get(k) for k in keys}
        os.environ.update(keys)
        try:
            return load_settings()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def start_standin(self, *, wait: bool = True) -> None:
        """The stand-in server; `wait`: return once it listens."""
        self.supervisor.start(
            "stand-in",
            cli_argv("fake-api", "--host", "127.0.0.1", "--port", str(self.standin_port)),
            self.env | self.standin_env,
        )
        if wait:
            self.wait_standin()

    def wait_standin(self) -> None:
        wait_for(
            lambda: _listening(self.standin_port),
            60,  # it starts beside the others: on a loaded machine, seconds each
            "the stand-in server to listen",
            interval=0.05,
            on_timeout=self.logs,
        )

    def start_worker(self, name: str = "worker", *, node: str | None = None) -> None:
        """One worker node; `node` gives it its own Celery node name (needed when
        several run at once: by default the name comes from this process's pid)."""
        self.supervisor.start(name, worker_argv(self.settings().ingest, node=node), self.env)

    def start_workers(self, count: int) -> list[str]:
        """`count` worker nodes, named worker-1..N, each with its own node name."""
        names = [f"worker-{i}" for i in range(1, count + 1)]
        for name in names:
            self.start_worker(name, node=f"reka-ingest-{name}-{os.getpid()}")
        return names

    def start_beat(self) -> None:
        self.supervisor.start("beat", beat_argv(self.settings().ingest), self.env)

    def start_watcher(self) -> None:
        self.supervisor.start("watcher", cli_argv("watch"), self.env)

    def start(self, *, workers: int = 1) -> Service:
        """Stand-in, worker(s), beat, watcher; several workers are worker-1..N.

        All four start at once and it returns once the stand-in listens: each takes
        seconds to import and start, and none calls the stand-in before a file is
        dropped (which the caller does after this returns)."""
        self.inbox.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        open_ledger(self.settings().ingest.ledger_url).dispose()
        self.start_standin(wait=False)
        if workers == 1:
            self.start_worker()
        else:
            self.start_workers(workers)
        self.start_beat()
        self.start_watcher()
        self.wait_standin()
        return self

    def stop(self) -> None:
        """Every child at once: SIGTERM to each, then wait for all together
        (`stop_all` stops them one by one, each given up to STOP_TIMEOUT, the order
        a user's `run` needs; a test's service is thrown away, so the order only
        costs seconds here). Whoever outlasts STOP_TIMEOUT is killed."""
        if self._ledger is not None:
            self._ledger.dispose()
        running = [c.process for c in self.supervisor.children if c.process.poll() is None]
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while any(p.poll() is None for p in running) and time.monotonic() < deadline:
            time.sleep(0.05)
        for proc in running:
            if proc.poll() is None:
                proc.kill()
                proc.wait(STOP_TIMEOUT)
        self.supervisor.stop_all()  # closes the log files; each child has ended

    def child(self, name: str) -> Any:
        return next(c for c in self.supervisor.children if c.name == name)

    def logs(self) -> str:
        folder = self.data_dir / "logs"
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-6000:]}"
            for p in sorted(folder.glob("*.log"))
        )

    # --- outcomes ---------------------------------------------------------

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            self._ledger = open_ledger(self.settings().ingest.ledger_url, migrate=False)
        return self._ledger

    def counts(self) -> dict[str, int]:
        return summary(self.ledger, now=time.time()).files

    def files(self) -> list[File]:
        return list_files(self.ledger)

    def wait_terminal(self, expected: int, timeout: float) -> dict[str, int]:
        """Wait until `expected` files are recorded and none is still active."""

        def done() -> bool:
            c = self.counts()
            active = c["queued"] + c["uploading"] + c["indexing"]
            return sum(c.values()) >= expected and active == 0

        wait_for(
            done, timeout, f"{expected} files to reach a final state", on_timeout=self.diagnose
        )
        return self.counts()

    def diagnose(self) -> str:
        return f"counts={self.counts()}\n{self.active_batches()}\n{self.logs()}"

    def active_batches(self) -> str:
        """Each batch still holding an active file, as the ledger has it now (times
        relative to now): first in a failure's report, which CI may cut short."""
        now = time.time()

        def rel(t: float | None) -> str:
            return "-" if t is None else f"{t - now:+.1f}s"

        with self.ledger.read() as s:
            rows = s.execute(
                select(File.batch_id, File.state, func.count())
                .where(File.state.in_(ACTIVE))
                .group_by(File.batch_id, File.state)
                .order_by(File.batch_id)
            ).all()
            ids = [r[0] for r in rows if r[0] is not None]
            batches = {b.id: b for b in s.scalars(select(Batch).where(Batch.id.in_(ids)))}
            lines = [f"active files by batch (now={now:.1f}):"]
            for batch_id, state, n in rows:
                b = batches.get(batch_id) if batch_id is not None else None
                where = (
                    "no batch"
                    if b is None
                    else f"batch {b.id} {b.state} attempts={b.attempts} claim={b.claim_seq}"
                    f" queued_at={rel(b.queued_at)} lease_until={rel(b.lease_until)}"
                    f" next_attempt_at={rel(b.next_attempt_at)} error={b.last_error!r}"
                )
                lines.append(f"  {n} {state}: {where}")
        return "\n".join(lines)

    def standin(self, path: str) -> Any:
        r = httpx.get(f"{self.base_url}{path}", headers={"X-Api-Key": API_KEY}, timeout=10)
        r.raise_for_status()
        return r.json()

    def standin_post(self, path: str, body: dict[str, Any]) -> Any:
        r = httpx.post(
            f"{self.base_url}{path}", json=body, headers={"X-Api-Key": API_KEY}, timeout=10
        )
        r.raise_for_status()
        return r.json()


def ledger_counts(data_dir: Path) -> dict[str, int]:
    """Files by state in the ledger of the deployment whose data folder this is, read
    straight from it: for a test's polls, where each `status --json` would start a
    Python process (seconds of imports on a loaded machine) and steal the CPU the
    run needs. What `status` itself shows is still asserted where it is the point."""
    ledger = open_ledger(load_settings(data_dir=data_dir).ingest.ledger_url, migrate=False)
    try:
        return summary(ledger, now=time.time()).files
    finally:
        ledger.dispose()


def wait_for(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    *,
    interval: float = 0.25,
    on_timeout: Callable[[], str] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    detail = on_timeout() if on_timeout else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{detail}")


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0

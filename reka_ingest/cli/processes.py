"""The command lines of the service's processes, and a small supervisor that
starts them, watches them and ends them (by pid, in reverse order).

Every child gets its own session, so Ctrl-C reaches only `reka-ingest run`,
which then stops the children in a safe order, a stop group at a time (the
members of a group are signalled together and waited for together): the
watcher, beat, Flower and the web page first (no new batches, nothing left
that sends a task), then the worker (a warm shutdown finishes the task in
hand), then the stand-in server and Redis.

When `run` cannot stop them in order (SIGKILL, a crash), two things still end
them: with `end_with_parent` each child gets SIGTERM from the kernel when its
parent dies (reka_ingest.core.parent_death), and with a `PidFile` each is recorded so
the next `run` ends whatever is left (reka_ingest.cli.pid_file).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from reka_ingest.cli.pid_file import PidFile
from reka_ingest.core.logs import get_logger
from reka_ingest.core.parent_death import die_with_parent
from reka_ingest.core.queues import CONTROL_QUEUE, UPLOAD_QUEUE
from reka_ingest.core.settings import IngestSettings
from worker.slots import pool_processes

log = get_logger(__name__)

WORKER_APP = "worker.celery_app"  # runs the tasks
BEAT_APP = "scheduler.app"  # sends them by name on a schedule; Flower watches through it
STOP_TIMEOUT = 20.0
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
BEAT_SCHEDULE = "celerybeat-schedule"  # beat's own state, in the data folder
FLOWER_DB = "flower.db"  # Flower's, in the data folder


def celery_argv(app: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", app, *args]


def worker_argv(
    settings: IngestSettings, *, concurrency: int | None = None, node: str | None = None
) -> list[str]:
    """A Celery worker's command line; `node` names it (before `@host`), so several
    workers started by one process each get their own node name. `concurrency`:
    upload requests in flight (default INGEST_WORKER_CONCURRENCY, which its processes
    must read too), with the pool around them (`worker.slots.pool_processes`)."""
    requests = concurrency or settings.worker_concurrency
    return celery_argv(
        WORKER_APP,
        "worker",
        "--queues",
        f"{UPLOAD_QUEUE},{CONTROL_QUEUE}",
        "--concurrency",
        str(pool_processes(requests)),
        "--loglevel",
        settings.log_level,
        "--hostname",
        f"{node or f'reka-ingest-{os.getpid()}'}@%h",
        "--task-events",
    )


def beat_argv(settings: IngestSettings) -> list[str]:
    return celery_argv(
        BEAT_APP,
        "beat",
        "--loglevel",
        settings.log_level,
        "--schedule",
        str(settings.data_dir / BEAT_SCHEDULE),
    )


def flower_argv(settings: IngestSettings) -> list[str]:
    # Basic auth, when set, goes in through FLOWER_BASIC_AUTH (see flower_env), never argv.
    return celery_argv(
        BEAT_APP,
        "flower",
        f"--address={settings.flower_host}",
        f"--port={settings.flower_port}",
        "--persistent=True",
        f"--db={settings.data_dir / FLOWER_DB}",
        "--url_prefix=",
    )


def flower_env(settings: IngestSettings) -> dict[str, str]:
    """FLOWER_BASIC_AUTH from INGEST_FLOWER_BASIC_AUTH; refuses an open Flower off loopback."""
    env: dict[str, str] = {}
    if settings.flower_basic_auth is not None:
        env["FLOWER_BASIC_AUTH"] = settings.flower_basic_auth.get_secret_value()
    elif settings.flower_host not in LOOPBACK_HOSTS:
        from reka_ingest.core.errors import SettingsError  # noqa: PLC0415 - only on this error path

        raise SettingsError(
            f"INGEST_FLOWER_BASIC_AUTH: Flower bound to {settings.flower_host} needs basic auth "
            "(user:password); without it, bind INGEST_FLOWER_HOST to 127.0.0.1"
        )
    return env


def cli_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "reka_ingest.cli", *args]


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes]
    log_path: Path | None
    log_file: IO[bytes] | None = field(default=None, repr=False)
    # Children of one group stop together; groups stop in reverse order of start.
    stop_group: str = ""

    def __post_init__(self) -> None:
        self.stop_group = self.stop_group or self.name

    @property
    def pid(self) -> int:
        return self.process.pid


class Supervisor:
    """Starts children, notices when one dies, stops them all by pid.

    `end_with_parent`: children get SIGTERM when this process dies, however it
    dies (start them from the main thread: the kernel ties them to the thread).
    `pid_file`: each child is recorded as it starts; the file goes once all stop.
    """

    def __init__(
        self,
        log_dir: Path | None,
        *,
        end_with_parent: bool = False,
        pid_file: PidFile | None = None,
    ) -> None:
        self.log_dir = log_dir
        self.end_with_parent = end_with_parent
        self.pid_file = pid_file
        self.children: list[Child] = []

    def start(
        self, name: str, argv: list[str], env: dict[str, str], *, stop_group: str = ""
    ) -> Child:
        """Start a child; `stop_group` names the children it is stopped together with
        (by default it stops alone)."""
        log_file: IO[bytes] | None = None
        log_path: Path | None = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log_path = self.log_dir / f"{name}.log"
            log_file = log_path.open("ab")
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and modules, fixed arguments
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file or None,
            stderr=subprocess.STDOUT if log_file else None,
            start_new_session=True,
            preexec_fn=die_with_parent() if self.end_with_parent else None,  # noqa: PLW1509 - prctl only
        )
        child = Child(name, argv, proc, log_path, log_file, stop_group)
        self._track(child)
        log.info("process_started", name=name, pid=proc.pid)
        return child

    def adopt(self, name: str, process: subprocess.Popen[bytes], *, stop_group: str = "") -> None:
        """Track a child started elsewhere (the bundled Redis) so it stops in order."""
        argv = [str(a) for a in process.args] if isinstance(process.args, list) else []
        self._track(Child(name, argv, process, None, stop_group=stop_group))

    def _track(self, child: Child) -> None:
        self.children.append(child)
        if self.pid_file is not None:
            self.pid_file.add(child.name, child.pid, child.argv)

    def dead(self) -> list[Child]:
        return [c for c in self.children if c.process.poll() is not None]

    def stop_all(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop every child by pid, a stop group at a time, the last started first;
        each group has `timeout` seconds after SIGTERM before SIGKILL."""
        groups: dict[str, list[Child]] = {}
        for child in reversed(self.children):
            groups.setdefault(child.stop_group, []).append(child)
        for members in groups.values():
            self._stop(members, timeout)
        self.children.clear()
        if self.pid_file is not None:
            self.pid_file.remove()

    @staticmethod
    def _stop(members: list[Child], timeout: float) -> None:
        running = [c for c in members if c.process.poll() is None]
        for child in running:
            log.info("process_stopping", name=child.name, pid=child.pid)
            child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while any(c.process.poll() is None for c in running) and time.monotonic() < deadline:
            time.sleep(0.1)
        for child in running:
            if child.process.poll() is None:
                log.warning("process_killed", name=child.name, pid=child.pid)
                child.process.kill()
                child.process.wait(timeout)
        for child in members:
            if child.log_file is not None:
                child.log_file.close()

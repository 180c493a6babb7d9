"""`reka-ingest run`: the whole service in one command, on embedded defaults.

The bundled redis-server when INGEST_REDIS_URL is unset, the stand-in Reka
server when REKA_API_KEY is unset, then a worker, beat, Flower and the
watcher, each its own process. Ctrl-C (SIGTERM, a closed terminal's SIGHUP)
stops them all, in order.

Before anything starts or the banner shows, the settings that would stop a
child at once are checked here, so the reason reaches the terminal (an inbox
on another filesystem than the data folder would end the watcher, its reason
only in a log). When `run` itself is killed, its children end too: each gets
SIGTERM from the kernel as its parent dies, and the next `run` ends any still
listed in the data folder's pid file (reka_ingest.cli.pid_file) before it takes the ports.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

import typer

from reka_ingest.cli.pid_file import PidFile
from reka_ingest.cli.processes import (
    Supervisor,
    beat_argv,
    cli_argv,
    flower_argv,
    flower_env,
    worker_argv,
)
from reka_ingest.core.bundled_redis import BundledRedis, free_port
from reka_ingest.core.constants import STANDIN_DEV_API_KEY
from reka_ingest.core.logs import get_logger
from reka_ingest.core.settings import Settings, load_settings, mask_url
from reka_ingest.ledger import open_ledger
from reka_ingest.ledger.queries import summary
from scheduler.claim import check_same_filesystem

log = get_logger(__name__)

STATUS_EVERY = 10.0  # seconds between the one-line progress reports
STANDIN_START_TIMEOUT = 20.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _wait_for_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.1)
    return False


def command() -> None:
    """Run everything: Redis, the stand-in API (without a key), worker, beat, Flower, watcher."""
    settings = load_settings()
    ingest = settings.ingest
    # A SettingsError here reaches the terminal (reka_ingest.cli.main) before any child starts.
    check_same_filesystem(ingest)
    data_dir = ingest.data_dir.resolve()
    inbox = ingest.inbox.resolve()
    for folder in (data_dir, inbox, ingest.work_dir):
        folder.mkdir(parents=True, exist_ok=True)
    pid_file = PidFile(data_dir)
    for mark in pid_file.claim():  # frees the ports an earlier, killed run still held
        typer.echo(f"ended {mark.name} (pid {mark.pid}), left running by an earlier run")
    open_ledger(ingest.ledger_url).dispose()  # migrate once, before any child starts

    env = dict(os.environ)
    env["INGEST_DATA_DIR"] = str(data_dir)
    env["INGEST_INBOX"] = str(inbox)
    supervisor = Supervisor(data_dir / "logs", end_with_parent=True, pid_file=pid_file)
    lines: list[tuple[str, str]] = []
    # Ctrl-C and SIGTERM only set an event: an exception raised at an arbitrary
    # point could land inside a lock (the ledger's pool) and hang the shutdown.
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in STOP_SIGNALS}
    try:
        lines.append(_start_redis(supervisor, settings, data_dir))
        if settings.reka.api_key is None:
            lines += _start_standin(supervisor, env)
        else:
            lines.append(("Reka API", settings.reka.api_base_url))

        supervisor.start("worker", worker_argv(ingest), env)
        supervisor.start("beat", beat_argv(ingest), env)
        supervisor.start("flower", flower_argv(ingest), env | flower_env(ingest))
        supervisor.start("watcher", cli_argv("watch"), env)
        lines += [
            ("Drop files into", str(inbox)),
            ("Flower", f"http://{ingest.flower_host}:{ingest.flower_port}"),
            ("Status", "reka-ingest status   (or: reka-ingest files --state failed)"),
            ("Done / failed", f"{ingest.done_path.resolve()}  /  {ingest.failed_path.resolve()}"),
            ("Logs", str(data_dir / "logs")),
        ]
        width = max(len(k) for k, _ in lines)
        typer.echo("reka-ingest is running. Ctrl-C stops everything.")
        for key_name, value in lines:
            typer.echo(f"  {key_name.ljust(width)}  {value}")
        _supervise(supervisor, ingest.ledger_url, stop)
        typer.echo("\nstopping ...")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        supervisor.stop_all()
        typer.echo("stopped.")


def _start_redis(supervisor: Supervisor, settings: Settings, data_dir: Path) -> tuple[str, str]:
    """The bundled redis-server, unless INGEST_REDIS_URL names one."""
    ingest = settings.ingest
    if ingest.redis_url is not None:
        return ("Redis", mask_url(ingest.broker_url))
    redis = BundledRedis(
        data_dir / "redis", ingest.bundled_redis_port, end_with_parent=True
    ).start()
    assert redis.process is not None
    supervisor.adopt("redis", redis.process)
    return ("Redis", f"{redis.url} (bundled, pid {redis.pid}, data in {data_dir / 'redis'})")


def _start_standin(supervisor: Supervisor, env: dict[str, str]) -> list[tuple[str, str]]:
    """The stand-in Reka server on loopback; points the children's env at it."""
    # The stand-in listens on loopback only; its documented key is no secret, and
    # `status` in another shell (with no key set) then reads the same budget.
    port = free_port()
    child = supervisor.start(
        "stand-in",
        cli_argv("fake-api", "--host", "127.0.0.1", "--port", str(port)),
        env | {"STANDIN_API_KEYS": STANDIN_DEV_API_KEY},
    )
    if not _wait_for_port(port, STANDIN_START_TIMEOUT):
        raise typer.Exit(_fail(f"the stand-in server did not start; see {child.log_path}"))
    env["REKA_API_KEY"] = STANDIN_DEV_API_KEY
    env["REKA_API_BASE_URL"] = f"http://127.0.0.1:{port}"
    # The stand-in has no quota by default; the standard tier's 100 requests a day
    # would only stall a local demo. An explicit setting still wins.
    env.setdefault("INGEST_UPLOADS_PER_DAY", "0")
    per_day = env["INGEST_UPLOADS_PER_DAY"]
    return [
        ("Reka API", f"stand-in server at http://127.0.0.1:{port} (no REKA_API_KEY set)"),
        (
            "API budget",
            f"{'unlimited' if per_day == '0' else per_day} upload requests a day "
            "(INGEST_UPLOADS_PER_DAY)",
        ),
    ]


def _supervise(supervisor: Supervisor, ledger_url: str, stop: threading.Event) -> None:
    """Until `stop` is set: notice a child that died, print progress now and then."""
    ledger = open_ledger(ledger_url, migrate=False)
    last_line, next_report = "", time.monotonic() + STATUS_EVERY
    try:
        while not stop.wait(0.5):
            dead = supervisor.dead()
            if dead:
                names = ", ".join(f"{c.name} (exit {c.process.returncode})" for c in dead)
                raise typer.Exit(_fail(f"stopped because a process ended: {names}; see the logs"))
            if time.monotonic() >= next_report:
                next_report = time.monotonic() + STATUS_EVERY
                try:
                    s = summary(ledger, now=time.time())
                except Exception as err:  # noqa: BLE001 - a progress line never stops the service
                    line = f"progress unknown: the ledger did not answer ({type(err).__name__})"
                    if line != last_line:
                        typer.echo(f"[{time.strftime('%H:%M:%S')}] {line}")
                        last_line = line
                    continue
                line = "  ".join(f"{k} {v}" for k, v in s.files.items() if v)
                if line and line != last_line:
                    typer.echo(f"[{time.strftime('%H:%M:%S')}] {line}")
                    last_line = line
    finally:
        ledger.dispose()


def _fail(message: str) -> int:
    typer.echo(f"reka-ingest: {message}", err=True)
    return 1

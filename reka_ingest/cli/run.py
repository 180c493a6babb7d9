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
listed in the data folder's run record (reka_ingest.cli.pid_file) before it takes the ports.

The run record (`<data dir>/run.json`) also says where the parts live (Redis
URL without password, the stand-in's and Flower's URLs, ports, pids, when it
started), so every command in another shell with the same INGEST_DATA_DIR reads
this deployment (reka_ingest.cli.deployment); a marker in Redis tells it the
Redis is ours. The stand-in keeps a fixed port (INGEST_STANDIN_PORT) and its
images in `<data dir>/standin`, so the ledger's image URLs survive a restart.

Output: the banner and the progress lines on stdout, errors on stderr, and
this process's own log lines in `<data dir>/logs/run.log` beside each child's
log, so no JSON line is mixed into the banner when the output is not a terminal.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis
import typer

from reka_ingest.cli.deployment import mark_redis
from reka_ingest.cli.pid_file import PidFile
from reka_ingest.cli.processes import (
    Supervisor,
    beat_argv,
    cli_argv,
    flower_argv,
    flower_env,
    worker_argv,
)
from reka_ingest.core.bundled_redis import BundledRedis
from reka_ingest.core.constants import REDIS_TIMEOUT, STANDIN_DEV_API_KEY
from reka_ingest.core.errors import SettingsError
from reka_ingest.core.logs import configure_logging, get_logger
from reka_ingest.core.places import require_free_port
from reka_ingest.core.settings import IngestSettings, Settings, load_settings, mask_url
from reka_ingest.ledger import open_ledger
from reka_ingest.ledger.queries import summary
from reka_ingest.metrics.budget import budget_words, publish_rule, read_budget
from reka_ingest.web.app import url_of as web_url
from reka_ingest.web.guard import check_bind as check_web_bind
from scheduler.claim import check_same_filesystem
from worker.budget import fingerprint

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
    check_web_bind(ingest)  # the web page off loopback needs INGEST_WEB_BASIC_AUTH
    data_dir = ingest.data_dir.resolve()
    inbox = ingest.inbox.resolve()
    for folder in (data_dir, inbox, ingest.work_dir, data_dir / "logs"):
        folder.mkdir(parents=True, exist_ok=True)
    # This process's own log lines go to a file beside its children's: stdout is the banner's.
    run_log = (data_dir / "logs" / "run.log").open("a", encoding="utf-8", buffering=1)
    configure_logging(ingest.log_level, ingest.log_format, stream=run_log)
    pid_file = PidFile(data_dir)
    for mark in pid_file.claim():  # frees the ports an earlier, killed run still held
        typer.echo(f"ended {mark.name} (pid {mark.pid}), left running by an earlier run")
    _ports_free(ingest, pid_file)
    _migrate_first(ingest.ledger_url, pid_file)

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
        redis_line, redis_url = _start_redis(supervisor, settings, data_dir)
        lines.append(redis_line)
        standin_url: str | None = None
        if settings.reka.api_key is None:
            standin_url = _start_standin(supervisor, env, ingest, data_dir)
            lines.append(("Reka API", f"stand-in server at {standin_url} (no REKA_API_KEY set)"))
        else:
            lines.append(("Reka API", settings.reka.api_base_url))
        lines.append(("API budget", _publish_budget(settings, env, redis_url, pid_file)))
        pid_file.describe(
            data_dir=str(data_dir),
            inbox=str(inbox),
            redis_url=_without_password(redis_url),
            redis_needs_password=urlsplit(redis_url).password is not None,
            bundled_redis_port=None if ingest.redis_url is not None else ingest.bundled_redis_port,
            standin_url=standin_url,
            standin_port=ingest.standin_port if standin_url else None,
            reka_api_base_url=standin_url or settings.reka.api_base_url,
            flower_url=f"http://{ingest.flower_host}:{ingest.flower_port}",
            flower_port=ingest.flower_port,
            database_url=_without_password(ingest.ledger_url),
            uploads_per_day=int(env["INGEST_UPLOADS_PER_DAY"]),
            uploads_per_second=ingest.uploads_per_second,
            logs=str(data_dir / "logs"),
        )

        supervisor.start("worker", worker_argv(ingest), env)
        # What sends tasks or only shows them stops first, together; then the worker.
        supervisor.start("beat", beat_argv(ingest), env, stop_group="front")
        flower = env | flower_env(ingest)
        supervisor.start("flower", flower_argv(ingest), flower, stop_group="front")
        supervisor.start("web", cli_argv("web"), env, stop_group="front")
        supervisor.start("watcher", cli_argv("watch"), env, stop_group="front")
        lines += [
            ("Drop files into", str(inbox)),
            ("Flower", f"http://{ingest.flower_host}:{ingest.flower_port}"),
            ("Web page", web_url(settings)),
            ("Status", f"{_command(data_dir)} status   (live: status --watch)"),
            ("Failures", f"{_command(data_dir)} files --state failed"),
            ("Done / failed", f"{ingest.done_path.resolve()}  /  {ingest.failed_path.resolve()}"),
            ("Logs", str(data_dir / "logs")),
        ]
        width = max(len(k) for k, _ in lines)
        typer.echo("reka-ingest is running. Ctrl-C stops everything.")
        for key_name, value in lines:
            typer.echo(f"  {key_name.ljust(width)}  {value}")
        _supervise(supervisor, ingest.ledger_url, redis_url, stop)
        typer.echo("\nstopping ...")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        supervisor.stop_all()
        typer.echo("stopped.")


def _ports_free(ingest: IngestSettings, pid_file: PidFile) -> None:
    """Flower's and the web page's ports can be bound, or the run ends here (with no
    record of a run), naming the port: a child that met it would only end, its reason
    in its log."""
    try:
        require_free_port(ingest.flower_host, ingest.flower_port, "INGEST_FLOWER_PORT")
        require_free_port(ingest.web_host, ingest.web_port, "INGEST_WEB_PORT")
    except BaseException:
        pid_file.remove()
        raise


def _migrate_first(ledger_url: str, pid_file: PidFile) -> None:
    """Migrate the ledger once, before any child starts; a ledger that fails (down,
    damaged) ends the run there, with no record of a run left behind."""
    try:
        open_ledger(ledger_url).dispose()
    except BaseException:
        pid_file.remove()
        raise


def _start_redis(
    supervisor: Supervisor, settings: Settings, data_dir: Path
) -> tuple[tuple[str, str], str]:
    """The bundled redis-server, unless INGEST_REDIS_URL names one: the banner line, the URL."""
    ingest = settings.ingest
    if ingest.redis_url is not None:
        return ("Redis", mask_url(ingest.broker_url)), ingest.broker_url
    bundled = BundledRedis(
        data_dir / "redis", ingest.bundled_redis_port, end_with_parent=True
    ).start()
    assert bundled.process is not None
    supervisor.adopt("redis", bundled.process, stop_group="back")
    line = f"{bundled.url} (bundled, pid {bundled.pid}, data in {data_dir / 'redis'})"
    return ("Redis", line), bundled.url


def _start_standin(
    supervisor: Supervisor, env: dict[str, str], ingest: IngestSettings, data_dir: Path
) -> str:
    """The stand-in Reka server on loopback, on its fixed port, its images kept in the
    data folder; points the children's env at it and returns its URL."""
    # The stand-in listens on loopback only; its documented key is no secret.
    port = ingest.standin_port
    if _wait_for_port(port, 0.0):
        raise SettingsError(
            f"INGEST_STANDIN_PORT: port {port} on 127.0.0.1 is already in use; stop what "
            "holds it, or pick another port"
        )
    storage = data_dir / "standin"
    child = supervisor.start(
        "stand-in",
        cli_argv(
            "fake-api", "--host", "127.0.0.1", "--port", str(port), "--storage-dir", str(storage)
        ),
        env | {"STANDIN_API_KEYS": STANDIN_DEV_API_KEY},
        stop_group="back",  # with Redis, once the worker has stopped
    )
    if not _wait_for_port(port, STANDIN_START_TIMEOUT):
        raise typer.Exit(_fail(f"the stand-in server did not start; see {child.log_path}"))
    url = f"http://127.0.0.1:{port}"
    env["REKA_API_KEY"] = STANDIN_DEV_API_KEY
    env["REKA_API_BASE_URL"] = url
    # The stand-in has no quota by default; the standard tier's 100 requests a day
    # would only stall a local demo. An explicit setting still wins.
    env.setdefault("INGEST_UPLOADS_PER_DAY", "0")
    return url


def _publish_budget(
    settings: Settings, env: dict[str, str], redis_url: str, pid_file: PidFile
) -> str:
    """Mark the Redis as this deployment's and publish the budget's rule there, as the
    workers will count it, before any starts; returns the banner's words for it, read
    back as every other view reads it (reka_ingest.metrics.budget)."""
    env.setdefault("INGEST_UPLOADS_PER_DAY", str(settings.ingest.uploads_per_day))
    key = env.get("REKA_API_KEY") or None
    client: redis.Redis[bytes] = redis.Redis.from_url(
        redis_url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
    )
    try:
        mark_redis(client, pid_file.data_dir, pid=os.getpid(), started_at=pid_file.started_at)
        publish_rule(
            client,
            fp=fingerprint(key),
            per_day=int(env["INGEST_UPLOADS_PER_DAY"]),
            per_second=settings.ingest.uploads_per_second,
        )
        now = time.time()
        return budget_words(read_budget(client, now=now), now)
    except redis.RedisError as err:
        return f"unknown (Redis did not answer: {type(err).__name__})"
    finally:
        client.close()


def _without_password(url: str) -> str:
    """`redis://:secret@host:6379/0` -> `redis://host:6379/0`: what the run record keeps."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{user}{host}{port}"))


def _command(data_dir: Path) -> str:
    """How to call `reka-ingest` from another shell, as printed: the script on PATH, or
    its path (`.venv/bin/reka-ingest` after `make run`), with INGEST_DATA_DIR when this
    data folder is not the default one there."""
    script = Path(sys.executable).parent / "reka-ingest"
    on_path = shutil.which("reka-ingest")
    if on_path is not None and Path(on_path).resolve() == script.resolve():
        command = "reka-ingest"
    elif script.exists():
        try:
            command = str(script.relative_to(Path.cwd()))
        except ValueError:
            command = str(script)
    else:
        command = f"{shlex.quote(sys.executable)} -m reka_ingest.cli"
    default = Path(str(IngestSettings.model_fields["data_dir"].default)).resolve()
    if data_dir != default:
        command = f"INGEST_DATA_DIR={shlex.quote(str(data_dir))} {command}"
    return command


def _supervise(
    supervisor: Supervisor, ledger_url: str, redis_url: str, stop: threading.Event
) -> None:
    """Until `stop` is set: notice a child that died, print progress now and then (file
    counts and the budget, in the words every view uses)."""
    ledger = open_ledger(ledger_url, migrate=False)
    client: redis.Redis[bytes] = redis.Redis.from_url(
        redis_url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
    )
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
                if line:
                    now = time.time()
                    budget = budget_words(read_budget(client, now=now), now, brief=True)
                    line += f"  |  API budget: {budget}"
                if line and line != last_line:
                    typer.echo(f"[{time.strftime('%H:%M:%S')}] {line}")
                    last_line = line
    finally:
        client.close()
        ledger.dispose()


def _fail(message: str) -> int:
    typer.echo(f"reka-ingest: {message}", err=True)
    return 1

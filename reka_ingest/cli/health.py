"""`reka-ingest health`: the container healthcheck. Exit 0 when healthy, 1
with one line saying what is not.

By default: Redis answers PING and the ledger answers a query. `--worker`
adds: a Celery worker on this host answers a control ping. `--http URL`
and `--tcp HOST:PORT` check a local endpoint (Flower's /healthcheck, the
metrics port, the stand-in). Nothing secret is printed: URLs are masked.
"""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Callable

import redis
import typer
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from reka_ingest.core.errors import LedgerMissing
from reka_ingest.core.settings import Settings, load_settings, mask_url
from reka_ingest.ledger import open_ledger

TIMEOUT = 5.0


def _backends(settings: Settings, timeout: float) -> str | None:
    ingest = settings.ingest
    client = redis.Redis.from_url(
        ingest.broker_url, socket_timeout=timeout, socket_connect_timeout=timeout
    )
    try:
        client.ping()
    except redis.RedisError as err:
        return f"redis at {mask_url(ingest.broker_url)}: {type(err).__name__}"
    finally:
        client.close()
    try:
        ledger = open_ledger(ingest.ledger_url, migrate=False, create=False)
    except LedgerMissing:
        return f"ledger at {mask_url(ingest.ledger_url)}: not there (nothing has run with it)"
    try:
        with ledger.read() as s:
            s.execute(text("SELECT 1"))
    except SQLAlchemyError as err:
        return f"ledger at {mask_url(ingest.ledger_url)}: {type(err).__name__}"
    finally:
        ledger.dispose()
    return None


def _worker(settings: Settings, timeout: float) -> str | None:
    from scheduler.enqueue import producer_app  # noqa: PLC0415 - only with --worker

    app = producer_app(settings)
    try:
        replies = app.control.ping(timeout=timeout)
    finally:
        app.close()
    here = f"@{socket.gethostname()}"
    names = [name for reply in replies or [] for name in reply]
    if not any(name.endswith(here) for name in names):
        return f"no Celery worker on {socket.gethostname()} answered a ping"
    return None


def _http(url: str, timeout: float) -> str | None:
    if not url.startswith(("http://127.0.0.1", "http://localhost")):
        return f"--http checks loopback only, got {url}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback http only
            status = int(resp.status)
    except OSError as err:
        return f"{url}: {type(err).__name__}"
    return None if 200 <= status < 300 else f"{url}: HTTP {status}"


def _tcp(address: str, timeout: float) -> str | None:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return None
    except (OSError, ValueError) as err:
        return f"{address}: {type(err).__name__}"


def command(
    backends: bool = typer.Option(True, help="Check Redis and the ledger."),
    worker: bool = typer.Option(False, "--worker", help="A worker on this host answers ping."),
    http: str | None = typer.Option(None, "--http", help="A loopback URL must answer 2xx."),
    tcp: str | None = typer.Option(None, "--tcp", help="HOST:PORT must accept a connection."),
    timeout: float = typer.Option(TIMEOUT, min=0.1, help="Seconds each check may take."),
) -> None:
    """Container healthcheck: exit 0 when healthy, 1 (with the reason) when not."""
    settings = load_settings()
    checks: list[tuple[bool, Callable[[], str | None]]] = [
        (backends, lambda: _backends(settings, timeout)),
        (worker, lambda: _worker(settings, timeout)),
        (http is not None, lambda: _http(http or "", timeout)),
        (tcp is not None, lambda: _tcp(tcp or "", timeout)),
    ]
    for wanted, check in checks:
        problem = check() if wanted else None
        if problem is not None:
            typer.echo(f"unhealthy: {problem}", err=True)
            raise typer.Exit(1)
    typer.echo("healthy")

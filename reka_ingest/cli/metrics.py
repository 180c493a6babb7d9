"""`reka-ingest metrics`: the Prometheus endpoint (what Flower lacks), read
from the ledger and Redis at each scrape. Metrics carry no secrets, so the
endpoint has no auth; bind it to loopback unless a scraper needs it."""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType

import typer

from reka_ingest.cli import deployment
from reka_ingest.core.settings import load_settings
from reka_ingest.metrics.collector import DEFAULT_PORT, build_registry, open_collector, serve


def command(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", help="Address to bind (0.0.0.0 in a container)."),
    port: int = typer.Option(DEFAULT_PORT, min=0, max=65535, help="Port of /metrics."),
    once: bool = typer.Option(False, "--once", help="Print the metrics page once and exit."),
) -> None:
    """Serve Prometheus metrics: files by state, queues, latency, API responses, budget."""
    settings = load_settings()
    # Which deployment is read, on stderr: stdout stays the metrics page.
    for line in deployment.announce(deployment.reading_of(ctx), settings.ingest.broker_url):
        typer.echo(line, err=True)
    if once:
        from prometheus_client import generate_latest  # noqa: PLC0415 - only for --once

        collector = open_collector(settings, clock=time.time, create=False)
        try:
            typer.echo(generate_latest(build_registry(collector)).decode(), nl=False)
        finally:
            collector.ledger.dispose()
            collector.redis.close()
        return
    stop = threading.Event()

    def _on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    server = serve(settings, host=host, port=port, clock=time.time)
    typer.echo(f"metrics on http://{host}:{server.port}/metrics")
    try:
        stop.wait()
    finally:
        server.close()

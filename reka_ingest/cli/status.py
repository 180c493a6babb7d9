"""`reka-ingest status`: what the ledger says (`files` is reka_ingest.cli.files).

It reads the deployment recorded in the data folder (reka_ingest.cli.deployment)
and says which on its first line (and under `deployment` in --json). The API
budget is the one reading and wording every view shares (reka_ingest.metrics.budget).
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis
import typer

from reka_ingest.cli import deployment
from reka_ingest.core.settings import Settings, load_settings
from reka_ingest.core.states import ACTIVE, FileState
from reka_ingest.core.text import printable
from reka_ingest.ledger import open_ledger
from reka_ingest.ledger.queries import Summary, summary
from reka_ingest.metrics.budget import BudgetView, budget_words, read_budget
from reka_ingest.metrics.counters import redis_client
from reka_ingest.metrics.server_check import ServerCheck, describe, read_server_check


def status_json(s: Summary, now: float) -> dict[str, Any]:
    elapsed = (
        (s.last_finished_at - s.first_seen_at)
        if s.first_seen_at is not None and s.last_finished_at is not None
        else None
    )
    # Files worked through: not those still on their way, nor those left out by the filters.
    waiting = (*ACTIVE, FileState.EXCLUDED)
    done = s.total - sum(s.files.get(state.value, 0) for state in waiting)
    return {
        "files": s.files,
        "total": s.total,
        "oldest_waiting": None
        if s.oldest_waiting_path is None
        else {
            "path": s.oldest_waiting_path,
            "seen_at": s.oldest_waiting_seen_at,
            "age_seconds": round(now - (s.oldest_waiting_seen_at or now), 1),
        },
        "finished_last_minute": s.finished_last_minute,
        "throughput_per_second": round(done / elapsed, 2) if elapsed else None,
    }


def status(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="One JSON object."),
    watch: bool = typer.Option(False, "--watch", help="A live view, every second; Ctrl-C exits."),
    once: bool = typer.Option(
        False, "--once", help="With --watch: draw the view once and exit (scripts, logs)."
    ),
) -> None:
    """Files per state, the oldest waiting file, throughput, the API budget left, and
    the last server check's findings."""
    settings = load_settings()
    reading = deployment.reading_of(ctx)
    lines = deployment.announce(reading, settings.ingest.broker_url)
    if watch:
        from reka_ingest.cli import watch_status  # noqa: PLC0415 - rich, only for --watch

        watch_status.watch(settings, header=lines, once=once)
        return
    ledger = open_ledger(settings.ingest.ledger_url, create=False)
    now = time.time()
    data = status_json(summary(ledger, now=now), now)
    ledger.dispose()
    budget = read_shared_budget(settings, now)
    data["budget"] = budget.as_json(now)
    data["deployment"] = reading.as_json() | {"line": lines[0], "warnings": lines[1:]}
    check, unreadable = read_check(settings)
    data["server_check"] = (
        {"unreadable": unreadable}
        if unreadable is not None
        else None
        if check is None
        else check.as_json(now)
    )
    if as_json:
        typer.echo(json.dumps(data))
        return
    for line in lines:
        typer.echo(line)
    typer.echo(f"files: {data['total']}")
    for state, count in data["files"].items():
        typer.echo(f"  {state:<10} {count}")
    oldest = data["oldest_waiting"]
    typer.echo(
        "oldest waiting: none"
        if oldest is None
        else f"oldest waiting: {printable(oldest['path'])} ({oldest['age_seconds']} s)"
    )
    rate = data["throughput_per_second"]
    typer.echo(
        f"finished in the last minute: {data['finished_last_minute']}"
        + (f"; overall {rate} files/s" if rate is not None else "")
    )
    typer.echo(budget_line(budget, now))
    typer.echo(server_check_line(check, unreadable, now, settings.ingest.server_check_interval))


def read_shared_budget(settings: Settings, now: float) -> BudgetView:
    """The shared API budget as every view reads it (never raises for Redis)."""
    client = redis_client(settings.ingest.broker_url)
    try:
        return read_budget(client, now=now)
    finally:
        client.close()


def read_check(settings: Settings) -> tuple[ServerCheck | None, str | None]:
    """The last server check's findings from Redis, or why they could not be read."""
    client = redis_client(settings.ingest.broker_url)
    try:
        return read_server_check(client), None
    except redis.RedisError as err:
        return None, f"Redis did not answer ({type(err).__name__})"
    finally:
        client.close()


def server_check_line(
    check: ServerCheck | None, unreadable: str | None, now: float, interval: float
) -> str:
    """`server check: 3 orphans, 0 missing, 12 min ago`, `never run`, or why unknown."""
    if unreadable is not None:
        return f"server check: unknown, {unreadable}"
    text = f"server check: {describe(check, now)}"
    if check is None and interval <= 0:
        text += " (the periodic check is off: INGEST_SERVER_CHECK_INTERVAL=0)"
    return text


def budget_line(b: BudgetView, now: float) -> str:
    """The shared upload budget in one line, in the words every view uses."""
    return f"API budget: {budget_words(b, now)}"

"""`reka-ingest status` and `reka-ingest files`: what the ledger says."""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

import redis
import typer
from sqlalchemy import Row

from reka_ingest.cli import watch_status
from reka_ingest.core.settings import Settings, load_settings
from reka_ingest.core.states import ACTIVE, FileState
from reka_ingest.ledger import open_ledger
from reka_ingest.ledger.queries import Summary, iter_files, summary
from reka_ingest.metrics.counters import redis_client
from reka_ingest.metrics.server_check import ServerCheck, describe, read_server_check
from worker.budget import BudgetSnapshot, budget_snapshot

FILE_FIELDS = (
    "id",
    "path",
    "sha256",
    "state",
    "reason",
    "message",
    "image_id",
    "image_url",
    "indexing_status",
    "upload_timestamp",
    "possible_duplicate",
    "duplicate_of",
    "batch_id",
    "upload_request_id",
    "conversion",
    "size",
    "seen_at",
    "uploaded_at",
    "indexed_at",
    "seconds_to_indexed",
    "final_path",
)


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
    as_json: bool = typer.Option(False, "--json", help="One JSON object."),
    watch: bool = typer.Option(False, "--watch", help="A live view, every second; Ctrl-C exits."),
) -> None:
    """Files per state, the oldest waiting file, throughput, the API budget left, and
    the last server check's findings."""
    settings = load_settings()
    if watch:
        watch_status.watch(settings)
        return
    ledger = open_ledger(settings.ingest.ledger_url)
    now = time.time()
    data = status_json(summary(ledger, now=now), now)
    ledger.dispose()
    budget = budget_snapshot(settings, now=now)
    data["budget"] = budget.as_json()
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
    typer.echo(f"files: {data['total']}")
    for state, count in data["files"].items():
        typer.echo(f"  {state:<10} {count}")
    oldest = data["oldest_waiting"]
    typer.echo(
        "oldest waiting: none"
        if oldest is None
        else f"oldest waiting: {oldest['path']} ({oldest['age_seconds']} s)"
    )
    rate = data["throughput_per_second"]
    typer.echo(
        f"finished in the last minute: {data['finished_last_minute']}"
        + (f"; overall {rate} files/s" if rate is not None else "")
    )
    typer.echo(budget_line(budget, now))
    typer.echo(server_check_line(check, unreadable, now, settings.ingest.server_check_interval))


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


def budget_line(b: BudgetSnapshot, now: float) -> str:
    """The shared upload budget in one line; says so when Redis cannot be read."""
    if b.error is not None:
        return f"API budget: unknown, {b.error}"
    if b.limit is None:
        text = "API budget: no daily limit (INGEST_UPLOADS_PER_DAY=0)"
    else:
        text = f"API budget: {b.remaining} of {b.limit} upload requests left"
        if b.refills_at is not None:
            text += f"; next slot frees in {watch_status.duration(b.refills_at - now)}"
    if b.paused_until is not None:
        text += f"; paused by the API for {watch_status.duration(b.paused_until - now)}"
    return text


# The ledger's columns behind FILE_FIELDS (`seconds_to_indexed` is computed from two).
_COLUMNS = tuple(name for name in FILE_FIELDS if name != "seconds_to_indexed")


def _record(row: Row[Any]) -> dict[str, Any]:
    """One exported file: FILE_FIELDS, in order."""
    out = {name: getattr(row, name) for name in _COLUMNS}
    indexed_at = out["indexed_at"]
    out["seconds_to_indexed"] = (
        round(indexed_at - out["seen_at"], 3) if indexed_at is not None else None
    )
    return {name: out[name] for name in FILE_FIELDS}


def _write_json(records: Iterator[dict[str, Any]], out: TextIO) -> None:
    """A JSON array written a row at a time (never built whole in memory)."""
    out.write("[")
    for i, record in enumerate(records):
        out.write(",\n" if i else "\n")
        out.write(json.dumps(record, ensure_ascii=False))
    out.write("\n]\n")


def files(
    state: FileState | None = typer.Option(None, "--state", help="Only files in this state."),
    as_json: bool = typer.Option(False, "--json", help="A JSON array of objects."),
    as_csv: bool = typer.Option(False, "--csv", help="CSV with a header row."),
    limit: int | None = typer.Option(None, "--limit", min=1),
) -> None:
    """The per-file results: path, hash, state, reason, image id, indexing status."""
    if as_json and as_csv:
        raise typer.BadParameter("choose one of --json and --csv")
    settings = load_settings()
    ledger = open_ledger(settings.ingest.ledger_url)
    try:
        records = map(_record, iter_files(ledger, _COLUMNS, state=state, limit=limit))
        if as_json:
            _write_json(records, sys.stdout)
        elif as_csv:
            writer = csv.DictWriter(sys.stdout, fieldnames=FILE_FIELDS)
            writer.writeheader()
            for r in records:
                writer.writerow(r)
        else:
            for r in records:
                detail = r["image_id"] or r["reason"] or ""
                typer.echo(f"{r['state']:<10} {detail:<40} {r['path']}")
    finally:
        ledger.dispose()

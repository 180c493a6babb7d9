"""`reka-ingest status` and `reka-ingest files`: what the ledger says.

Both read the deployment recorded in the data folder (reka_ingest.cli.deployment)
and say which: `status` on its first line (and under `deployment` in --json),
`files` on stderr (its stdout stays the table, JSON or CSV). The API budget is
the one reading and wording every view shares (reka_ingest.metrics.budget).
"""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

import redis
import typer
from sqlalchemy import Row

from reka_ingest.cli import deployment, watch_status
from reka_ingest.core.settings import Settings, load_settings
from reka_ingest.core.states import ACTIVE, FileState
from reka_ingest.ledger import open_ledger
from reka_ingest.ledger.queries import Summary, iter_file_chunks, summary
from reka_ingest.metrics.budget import BudgetView, budget_words, read_budget
from reka_ingest.metrics.counters import redis_client
from reka_ingest.metrics.server_check import ServerCheck, describe, read_server_check

FILE_FIELDS = (
    "id",
    "path",
    "origin",
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
        watch_status.watch(settings, header=lines, once=once)
        return
    ledger = open_ledger(settings.ingest.ledger_url)
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
        else f"oldest waiting: {oldest['path']} ({oldest['age_seconds']} s)"
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


# The ledger's columns behind FILE_FIELDS (`seconds_to_indexed` is computed from two).
_COLUMNS = tuple(name for name in FILE_FIELDS if name != "seconds_to_indexed")
_SECONDS_AT = FILE_FIELDS.index("seconds_to_indexed")  # every column before it is a _COLUMNS one
_SEEN_AT, _INDEXED_AT = _COLUMNS.index("seen_at"), _COLUMNS.index("indexed_at")
# `json.dumps(record, ensure_ascii=False)`'s output, without a new encoder per row.
_ENCODE_JSON = json.JSONEncoder(ensure_ascii=False, check_circular=False).encode


def _values(rows: Sequence[Row[Any]]) -> list[tuple[Any, ...]]:
    """Each exported file's values, in FILE_FIELDS order (plain tuples: an export of
    a million rows writes them with one C call per chunk, not a dict per row)."""
    out = []
    for row in rows:
        indexed_at = row[_INDEXED_AT]
        seconds = round(indexed_at - row[_SEEN_AT], 3) if indexed_at is not None else None
        out.append((*row[:_SECONDS_AT], seconds, *row[_SECONDS_AT:]))
    return out


def _write_json(chunks: Iterable[list[tuple[Any, ...]]], out: TextIO) -> None:
    """A JSON array, one object per line, written a chunk at a time (never built whole)."""
    out.write("[")
    separator = "\n"
    for values in chunks:
        out.write(separator)
        # One object alive at a time: the chunk's text, not its dicts, is what is held.
        out.write(",\n".join(_ENCODE_JSON(dict(zip(FILE_FIELDS, v, strict=True))) for v in values))
        separator = ",\n"
    out.write("\n]\n")


def _write_csv(chunks: Iterable[list[tuple[Any, ...]]], out: TextIO) -> None:
    """CSV with a header row (what `csv.DictWriter` writes), a chunk at a time."""
    writer = csv.writer(out)
    writer.writerow(FILE_FIELDS)
    for values in chunks:
        writer.writerows(values)


def files(
    ctx: typer.Context,
    state: FileState | None = typer.Option(None, "--state", help="Only files in this state."),
    as_json: bool = typer.Option(False, "--json", help="A JSON array of objects."),
    as_csv: bool = typer.Option(False, "--csv", help="CSV with a header row."),
    limit: int | None = typer.Option(None, "--limit", min=1),
) -> None:
    """The per-file results: path, hash, state, reason, image id, indexing status."""
    if as_json and as_csv:
        raise typer.BadParameter("choose one of --json and --csv")
    settings = load_settings()
    reading = deployment.reading_of(ctx)
    if not (as_json or as_csv):
        for line in deployment.announce(reading, settings.ingest.broker_url, check_redis=False):
            typer.echo(line, err=True)
    ledger = open_ledger(settings.ingest.ledger_url)
    try:
        chunks = map(_values, iter_file_chunks(ledger, _COLUMNS, state=state, limit=limit))
        if as_json:
            _write_json(chunks, sys.stdout)
        elif as_csv:
            _write_csv(chunks, sys.stdout)
        else:
            # A failed (or superseded) row's reason is not enough to act on: its
            # message follows, on the same line, after the path.
            records = (dict(zip(FILE_FIELDS, v, strict=True)) for vs in chunks for v in vs)
            for r in records:
                detail = r["image_id"] or r["reason"] or ""
                line = f"{r['state']:<10} {detail:<40} {r['path']}"
                if r["message"] and not r["image_id"]:
                    line += f"  {r['message']}"
                typer.echo(line)
    finally:
        ledger.dispose()

"""`reka-ingest files`: the per-file results, as a table, CSV or JSON.

It reads the deployment recorded in the data folder (reka_ingest.cli.deployment)
and says which on stderr (its stdout stays the table, JSON or CSV). Rows are
streamed a chunk at a time (reka_ingest.ledger.queries.iter_file_chunks) and
written by reka_ingest.cli.export; a large CSV or JSON export of a SQLite ledger
to a real stdout is shared with a helper process (reka_ingest.cli.export_pair).
This module imports only what an export needs (no Redis client, no live view):
at a million rows a user waits for the rows, and for a small ledger, for the
imports.
"""

from __future__ import annotations

import sys

import typer

from reka_ingest.cli import deployment, export_pair
from reka_ingest.cli.export import COLUMNS, keep_freed_memory, write_csv, write_json
from reka_ingest.core.constants import SQLITE_BUSY_TIMEOUT_MS
from reka_ingest.core.settings import load_settings
from reka_ingest.core.states import FileState
from reka_ingest.core.text import printable
from reka_ingest.ledger import Ledger, open_ledger
from reka_ingest.ledger.queries import iter_file_chunks, sqlite_chunk_sql


def _pair_plan(
    ledger: Ledger, fmt: export_pair.Format, state: FileState | None, limit: int | None
) -> export_pair.Plan | None:
    """The two-process export's plan (reka_ingest.cli.export_pair), or None where one
    process does as well: another database (its server reads in its own process),
    stdout that is no file (a test's runner), fewer than three chunks to write."""
    database = ledger.engine.url.database
    if not ledger.is_sqlite or not database or database == ":memory:":
        return None
    try:
        sys.stdout.flush()
        sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    width = export_pair.WIDTH
    if limit is not None and limit <= 2 * width:
        return None
    sql = sqlite_chunk_sql(COLUMNS, state)
    with ledger.read() as s:
        low, high = s.connection().exec_driver_sql(sql.span.sql).one()
    if low is None or high - low < 2 * width:
        return None
    lo = low - 1
    return export_pair.Plan(
        database=database,
        busy_timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
        range_sql=(sql.range.sql, sql.range.names, sql.range.fixed),
        tail_sql=(sql.tail.sql, sql.tail.names, sql.tail.fixed),
        state=sql.state,
        fmt=fmt,
        lo=lo,
        tail=-(-(high - lo) // width),  # chunks 0.. tail-1 hold every id up to `high`
        limit=limit,
        encoding=sys.stdout.encoding,
        errors=sys.stdout.errors or "strict",
    )


def command(
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
    ledger = open_ledger(settings.ingest.ledger_url, create=False)
    if as_json or as_csv:
        keep_freed_memory()  # this process ends with the export
    try:
        if (as_json or as_csv) and (
            plan := _pair_plan(ledger, "json" if as_json else "csv", state, limit)
        ):
            export_pair.export(plan)
            return
        chunks = iter_file_chunks(ledger, COLUMNS, state=state, limit=limit)
        if as_json:
            write_json(chunks, sys.stdout)
        elif as_csv:
            write_csv(chunks, sys.stdout)
        else:
            # A failed (or superseded) row's reason is not enough to act on: its
            # message follows, on the same line, after the path. One line a row,
            # whatever a name holds (`printable`).
            records = (dict(zip(COLUMNS, v, strict=True)) for vs in chunks for v in vs)
            for r in records:
                detail = r["image_id"] or r["reason"] or ""
                line = f"{r['state']:<10} {printable(detail):<40} {printable(r['path'])}"
                if r["message"] and not r["image_id"]:
                    line += f"  {printable(r['message'])}"
                typer.echo(line)
    finally:
        ledger.dispose()

"""`reka-ingest files`: the per-file results, as a table, CSV or JSON.

It reads the deployment recorded in the data folder (reka_ingest.cli.deployment)
and says which on stderr (its stdout stays the table, JSON or CSV). Rows are
streamed a chunk at a time (reka_ingest.ledger.queries.iter_file_chunks) and
written by reka_ingest.cli.export. This module imports only what an export
needs (no Redis client, no live view): at a million rows a user waits for the
rows, and for a small ledger, for the imports.
"""

from __future__ import annotations

import sys

import typer

from reka_ingest.cli import deployment
from reka_ingest.cli.export import COLUMNS, write_csv, write_json
from reka_ingest.core.settings import load_settings
from reka_ingest.core.states import FileState
from reka_ingest.ledger import open_ledger
from reka_ingest.ledger.queries import iter_file_chunks


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
    ledger = open_ledger(settings.ingest.ledger_url)
    try:
        chunks = iter_file_chunks(ledger, COLUMNS, state=state, limit=limit)
        if as_json:
            write_json(chunks, sys.stdout)
        elif as_csv:
            write_csv(chunks, sys.stdout)
        else:
            # A failed (or superseded) row's reason is not enough to act on: its
            # message follows, on the same line, after the path.
            records = (dict(zip(COLUMNS, v, strict=True)) for vs in chunks for v in vs)
            for r in records:
                detail = r["image_id"] or r["reason"] or ""
                line = f"{r['state']:<10} {detail:<40} {r['path']}"
                if r["message"] and not r["image_id"]:
                    line += f"  {r['message']}"
                typer.echo(line)
    finally:
        ledger.dispose()

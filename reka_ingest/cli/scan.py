"""`reka-ingest scan DIR`: backfill an existing tree, in place, with a progress bar."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text

from reka_ingest.core.settings import load_settings
from reka_ingest.core.text import printable
from reka_ingest.files.filters import PathFilter
from reka_ingest.ledger import open_ledger
from scheduler.backfill import backfill, count_files, refusal
from scheduler.enqueue import celery_enqueue


def _no_enqueue(_batch_id: int) -> None:
    """Leave batches `queued` in the ledger; the beat sweep sends them later."""


def command(
    directory: Path = typer.Argument(
        ..., exists=True, file_okay=False, dir_okay=True, help="The tree to record, in place."
    ),
    enqueue: bool = typer.Option(
        True,
        "--enqueue/--no-enqueue",
        help="Send each batch to the workers now (default), or leave it to the beat sweep.",
    ),
) -> None:
    """Record every file under DIR in place (nothing is moved), batch and enqueue them."""
    settings = load_settings()
    problem = refusal(settings.ingest, directory)
    if problem is not None:
        raise typer.BadParameter(problem, param_hint="DIR")
    console = Console(stderr=True)
    ledger = open_ledger(settings.ingest.ledger_url)
    app = None
    send: Callable[[int], None] = _no_enqueue
    if enqueue:
        send, app = celery_enqueue(settings)
    try:
        with console.status(Text(f"walking {printable(str(directory))} ...")):
            total = count_files(directory, PathFilter.from_settings(settings.ingest))
        with Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("recording", total=total)
            summary = backfill(
                settings.ingest,
                ledger,
                directory,
                send,
                progress=lambda n: progress.advance(task, n),
            )
    finally:
        if app is not None:
            app.close()
        ledger.dispose()
    typer.echo(f"found:       {summary.found}")
    typer.echo(f"recorded:    {summary.recorded} (queued {summary.queued})")
    typer.echo(f"duplicates:  {summary.duplicates}")
    typer.echo(f"failed:      {summary.failed}")
    typer.echo(f"known:       {summary.already_known} (recorded by an earlier run)")
    if summary.excluded:
        typer.echo(
            f"excluded:    {summary.excluded} (left in place by INGEST_INCLUDE/INGEST_EXCLUDE)"
        )
    if summary.url_lists:
        typer.echo(f"URL lists:   {summary.url_lists} (one row per URL, counted above)")
    if summary.too_new:
        typer.echo(f"too new:     {summary.too_new} (still changing; run again later)")
    typer.echo(f"batches:     {summary.batches}")
    if summary.enqueue_failures:
        typer.echo(
            f"not sent:    {summary.enqueue_failures} batch(es) stay queued; "
            "the beat sweep sends them"
        )

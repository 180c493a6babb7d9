"""`reka-ingest plan PATH`: a dry run over a tree or a URL list, and its time at the quota."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text

from reka_ingest.core.errors import IngestError
from reka_ingest.core.settings import load_settings
from reka_ingest.core.text import printable
from reka_ingest.ledger import Ledger, open_ledger
from scheduler.backfill import count_files
from scheduler.plan import PlanReport, plan


def command(
    target: Path = typer.Argument(
        ...,
        exists=True,
        file_okay=True,
        dir_okay=True,
        help="A folder to walk, or one image URL list (*.urls, *.urls.csv).",
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object instead of text."),
    use_ledger: bool = typer.Option(
        True,
        "--ledger/--no-ledger",
        help="Count files the ledger already has as duplicates (default), or ignore the ledger.",
    ),
) -> None:
    """Show what taking PATH in would do, without claiming, recording or uploading anything."""
    settings = load_settings().ingest
    console = Console(stderr=True)
    ledger = _ledger(settings.ledger_url, console) if use_ledger else None
    try:
        show_progress = console.is_terminal and not as_json
        if target.is_dir() and show_progress:
            with console.status(Text(f"counting files under {printable(str(target))} ...")):
                total = count_files(target)
            with Progress(
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=console,
                transient=True,
            ) as progress:
                task = progress.add_task("planning", total=total)
                report = plan(
                    settings, ledger, target, progress=lambda n: progress.advance(task, n)
                )
        else:
            report = plan(settings, ledger, target)
    finally:
        if ledger is not None:
            ledger.dispose()
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
    else:
        typer.echo(render(report))


def _ledger(url: str, console: Console) -> Ledger | None:
    """The ledger when it can be read; without it, duplicates are counted within PATH only."""
    try:
        return open_ledger(url, create=False)
    except IngestError as err:
        console.print(
            Text(
                f"ledger not read ({printable(str(err))}); duplicates counted within PATH only",
                style="yellow",
            )
        )
        return None


def render(report: PlanReport) -> str:
    """The plan as a person reads it; the headline last."""
    lines = [f"plan for {printable(report.root)} (nothing was claimed, recorded or uploaded)"]

    def row(label: str, value: int, detail: str = "") -> None:
        lines.append(f"  {label:<14} {value:>10,}" + (f"  {detail}" if detail else ""))

    kinds = ", ".join(f"{kind} {n:,}" for kind, n in report.kinds.most_common())
    row("files", report.files, f"({kinds})" if kinds else "")
    converted = f", {report.converted:,} converted to JPEG" if report.converted else ""
    row("would upload", report.files_up.items, f"images, {_size(report.files_up.bytes)}{converted}")
    if report.manifests:
        row("image URLs", report.urls_up.items, f"to upload, from {report.manifests:,} list(s)")
    row(
        "duplicates",
        report.duplicates,
        f"({report.duplicates_of_uploaded:,} already in the ledger, "
        f"{report.duplicates_within:,} repeated within this plan)",
    )
    row("would fail", report.would_fail)
    for reason, count in report.failures.most_common():
        examples = ", ".join(map(printable, report.examples.get(reason, [])))
        lines.append(f"    {reason:<20} {count:>8,}  e.g. {examples}")
    row("excluded", report.excluded, "(left in place by INGEST_INCLUDE / INGEST_EXCLUDE)")
    row("requests", report.requests, f"(walked in {report.seconds:.1f} s)")
    lines.append("")
    lines.append(report.headline())
    return "\n".join(lines)


def _size(n: int) -> str:
    if n < 1024:
        return f"{n:,} bytes"
    value = n / 1024
    for unit in ("KB", "MB", "GB"):
        if value < 1024:
            return f"{value:,.1f} {unit}"
        value /= 1024
    return f"{value:,.1f} TB"

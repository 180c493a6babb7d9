"""`reka-ingest delete`: delete images from Reka on request (a camera pointed at
the wrong place, a privacy request), by the files' dropped path (a glob), an
image id, a state, or the time the files were found (`--since/--until`).

Each matching row's image is deleted (Delete Image) and every row holding that
image (the file, and the copies recorded as its duplicates) is recorded
`deleted`, with a time, the reason `deleted` and a message; the files' bytes
stay where they are. On a terminal it asks first (`--yes` does not); elsewhere
it needs `--yes`. `--dry-run` lists what would be deleted.

A deletion whose answer never came (a read timeout, a connection dropped
mid-way) may have happened: it is reported as of unknown outcome, its rows are
left as they were, and `reka-ingest check` settles it against the server.

Exit status: 0 when every matching image is deleted (or was gone already); 1
when nothing matched, or some deletions failed or have an unknown outcome; 2
for a usage error.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime

import typer

from reka_ingest.core.settings import load_settings
from reka_ingest.core.states import FileState
from reka_ingest.core.text import printable
from reka_ingest.ledger import open_ledger
from worker.runtime import Runtime
from worker.serverside import DeleteReport, Selection, delete_images, select_for_delete

SHOWN = 10


def parse_time(value: str | None, option: str) -> float | None:
    """Epoch seconds, or an ISO 8601 date or date-time (UTC unless it says otherwise)."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            "give epoch seconds or an ISO date/time (2026-11-27, 2026-11-27T10:00)",
            param_hint=option,
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _is_terminal() -> bool:
    return sys.stdin.isatty()


def _summary(report: DeleteReport) -> list[str]:
    lines = [
        f"deleted {report.deleted} image(s) from Reka ({report.already_gone} already gone);"
        f" {report.rows_marked} row(s) recorded deleted; {report.requests} request(s)"
    ]
    for image_id, error in list(report.failed.items())[:SHOWN]:
        lines.append(f"  not deleted {image_id}: {error}")
    if report.unknown:
        lines.append(
            f"outcome unknown for {len(report.unknown)} image(s): the request may have reached"
            " Reka, which may have deleted the image; their rows are left as they were."
            " `reka-ingest check` settles it"
        )
    for image_id, error in list(report.unknown.items())[:SHOWN]:
        lines.append(f"  outcome unknown {image_id}: {error}")
    return lines


def command(  # noqa: PLR0917 - typer maps each option to one parameter
    path: str | None = typer.Option(
        None, "--path", help="Files whose dropped path matches this glob (e.g. 'cam1/*')."
    ),
    image_id: str | None = typer.Option(None, "--image-id", help="The file(s) with this image id."),
    state: FileState | None = typer.Option(None, "--state", help="Files in this state."),
    since: str | None = typer.Option(
        None, "--since", help="Files found at or after this time (ISO date/time, UTC, or epoch)."
    ),
    until: str | None = typer.Option(
        None, "--until", help="Files found before this time (ISO date/time, UTC, or epoch)."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="List what would be deleted; delete nothing."
    ),
    as_json: bool = typer.Option(False, "--json", help="The outcome as one JSON object."),
) -> None:
    """Delete the matching files' images from Reka and record them `deleted` (bytes stay)."""
    selection = Selection(
        path_glob=path,
        image_id=image_id,
        state=state.value if state is not None else None,
        since=parse_time(since, "--since"),
        until=parse_time(until, "--until"),
    )
    if selection.empty():
        raise typer.BadParameter(
            "give at least one of --path, --image-id, --state, --since, --until"
        )
    settings = load_settings()
    rt = Runtime(settings, open_ledger(settings.ingest.ledger_url, create=False))
    try:
        report = _run(rt, selection, yes=yes, dry_run=dry_run, as_json=as_json)
    finally:
        rt.close()
    if as_json:
        typer.echo(json.dumps(report.to_json(), ensure_ascii=False))
    elif dry_run:
        typer.echo(
            f"dry run: would delete {report.images} image(s) and record"
            f" {report.rows_marked} row(s) deleted; nothing changed"
        )
    else:
        for line in _summary(report):
            typer.echo(line)
    if report.failed or report.unknown:
        raise typer.Exit(code=1)


def _run(
    rt: Runtime, selection: Selection, *, yes: bool, dry_run: bool, as_json: bool
) -> DeleteReport:
    """Select, show, confirm, delete."""
    rows = select_for_delete(rt, selection)
    if not rows:
        typer.echo("nothing matched: no file with an image on Reka fits the selection", err=True)
        raise typer.Exit(code=1)
    images = len({r.image_id for r in rows})
    if not as_json:
        typer.echo(f"{len(rows)} file(s) match, {images} image(s) on Reka:")
        for r in rows[:SHOWN]:
            typer.echo(f"  {r.state:<10} {printable(r.image_id):<40} {printable(r.path)}")
        if len(rows) > SHOWN:
            typer.echo(f"  ... and {len(rows) - SHOWN} more")
    if not dry_run and not yes:
        if not _is_terminal():
            typer.echo("not a terminal: add --yes to delete them", err=True)
            raise typer.Exit(code=2)
        if not typer.confirm(f"Delete {images} image(s) from Reka?", default=False):
            typer.echo("nothing deleted")
            raise typer.Exit(code=1)
    return delete_images(rt, rows, dry_run=dry_run)

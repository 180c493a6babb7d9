"""`reka-ingest check [--fix] [--dry-run] [--json]`: the ledger against what Reka holds.

Read only by default: it pages through List Images and the ledger and reports
orphans (images no row owns), missing images (rows `indexed`/`stored` whose
image Reka no longer has), status drift, and whether each `possible_duplicate`
file really has copies on the server. `--fix` deletes the confirmed extra
copies, clears the settled flags and marks missing rows `expired`;
`--dry-run` says what `--fix` would do and changes nothing. The engine is
`worker.serverside.check_server`.
"""

from __future__ import annotations

import json

import typer

from reka_ingest.core.settings import load_settings
from reka_ingest.core.text import printable
from reka_ingest.ledger import open_ledger
from worker.runtime import Runtime
from worker.serverside import CheckReport, check_server

_KINDS = (
    ("orphans", "orphans (on Reka, owned by no row)"),
    ("in_flight", "uploaded while a batch was in flight (judged at the next check)"),
    ("missing", "missing (recorded on Reka, gone from it)"),
    ("drift", "status drift (indexing_status differs)"),
    ("settled", "possible duplicates settled"),
    ("unsettled", "possible duplicates not settled"),
)


def render(report: CheckReport, *, fix: bool, dry_run: bool) -> list[str]:
    """The report as lines a person reads."""
    counts = {
        "orphans": report.orphans,
        "in_flight": report.in_flight,
        "missing": report.missing,
        "drift": report.drift,
        "settled": report.duplicates_settled,
        "unsettled": report.duplicates_unsettled,
    }
    lines = [
        f"images on Reka: {report.images_on_server}; ledger rows checked: {report.rows_checked}",
    ]
    for kind, label in _KINDS:
        lines.append(f"{label}: {counts[kind]}")
        lines.extend(
            f"  {printable(json.dumps(item, ensure_ascii=False))}" for item in report.examples[kind]
        )
        if counts[kind] > len(report.examples[kind]):
            lines.append(f"  ... and {counts[kind] - len(report.examples[kind])} more")
    if fix or dry_run:
        verb = "would" if dry_run else "did"
        f = report.fixed
        lines.append(
            f"fix ({verb}): delete {f['extra_copies_deleted']} extra cop(ies), mark"
            f" {f['expired']} row(s) expired, clear {f['flags_cleared']} possible_duplicate flag(s)"
        )
    lines.extend(f"note: {printable(note)}" for note in report.notes)
    lines.append(f"{report.requests} request(s) in {report.seconds:.1f} s")
    return lines


def command(
    fix: bool = typer.Option(
        False,
        "--fix",
        help="Delete confirmed extra copies, clear settled possible_duplicate flags,"
        " mark missing rows expired.",
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Say what --fix would do; change nothing."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object."),
) -> None:
    """Compare the ledger with what Reka holds: orphans, missing images, drift, duplicates."""
    settings = load_settings()
    rt = Runtime(settings, open_ledger(settings.ingest.ledger_url, create=False))
    try:
        report = check_server(rt, fix=fix, dry_run=dry_run)
    finally:
        rt.close()
    if as_json:
        typer.echo(json.dumps(report.to_json(), ensure_ascii=False))
        return
    for line in render(report, fix=fix, dry_run=dry_run):
        typer.echo(line)

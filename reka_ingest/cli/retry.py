"""`reka-ingest retry`: queue failed files again once their cause is fixed
(a wrong API key, a quota, a server outage, a replaced file); `--reason expired`
(or `deleted`) uploads again the files whose images Reka no longer holds, from
where their bytes were kept (done/, the work area with INGEST_AFTER_UPLOAD=keep,
or in place).

The work is `scheduler.requeue.retry_failed`, which the web page's retry button
calls too: see there for what happens to each file.

Exit status: 0 when at least one file was requeued; 1 when none was, with a
line saying why: nothing matched the selector (no failed file, or none with
that reason or path), or files matched and not one could be requeued (each
reason is printed). A script must not read "nothing happened" as done.
"""

from __future__ import annotations

import typer

from reka_ingest.cli import deployment
from reka_ingest.core.errors import SettingsError
from reka_ingest.core.settings import load_settings
from reka_ingest.core.states import RETRY_REASONS, Reason
from reka_ingest.core.text import printable
from reka_ingest.ledger import open_ledger
from scheduler.requeue import retry_failed


def _retry_reason(value: str | None) -> str | None:
    """`--reason`: one a retry can match (a duplicate's or an excluded file's never does)."""
    if value is not None and value not in RETRY_REASONS:
        # One `reka-ingest:` line (main), as every other refusal, not Click's box.
        raise SettingsError(
            f"retry --reason {printable(value)!r} is not a reason a retry can match;"
            f" one of: {', '.join(sorted(RETRY_REASONS))}"
        )
    return value


def command(
    ctx: typer.Context,
    reason_text: str | None = typer.Option(
        None,
        "--reason",
        help="Only files that failed for this reason (e.g. auth_failed); `expired` or"
        " `deleted`: the files in that state (their images are gone from Reka). One of: "
        + ", ".join(sorted(RETRY_REASONS)),
        metavar="REASON",
        callback=_retry_reason,
        autocompletion=lambda: sorted(RETRY_REASONS),
    ),
    path: str | None = typer.Option(
        None, "--path", help="Only files whose dropped path matches this glob (e.g. 'cam1/*')."
    ),
) -> None:
    """Queue failed files again once the cause is fixed (wrong key, quota, a replaced file),
    or expired ones (`--reason expired`)."""
    reason = Reason(reason_text) if reason_text is not None else None
    settings = load_settings()
    for line in deployment.announce(deployment.reading_of(ctx), settings.ingest.broker_url):
        typer.echo(line, err=True)
    ledger = open_ledger(settings.ingest.ledger_url, create=False)
    try:
        done = retry_failed(
            settings, ledger, reason=reason.value if reason else None, path_glob=path
        )
    finally:
        ledger.dispose()
    files, batches, skipped = done.files, done.batches, done.skipped
    if done.send_error is not None:
        typer.echo(
            f"could not enqueue now ({done.send_error}); beat's sweep will send them", err=True
        )
    typer.echo(f"requeued {files} file(s) in {len(batches)} batch(es)")
    for why, paths in skipped.items():
        typer.echo(f"not retried, {why}: {len(paths)}")
        for p in paths[:10]:
            typer.echo(f"  {printable(p)}")
        if len(paths) > 10:
            typer.echo(f"  ... and {len(paths) - 10} more")
    if not files:
        typer.echo(
            f"reka-ingest retry: nothing requeued; {_why_none(reason, path, skipped)}", err=True
        )
        raise typer.Exit(code=1)


def _why_none(reason: Reason | None, path: str | None, skipped: dict[str, list[str]]) -> str:
    """Why a retry requeued nothing: what matched could not go, or nothing matched."""
    if skipped:
        return "the matching files cannot be retried (why is listed above)"
    by_state = reason in (Reason.EXPIRED, Reason.DELETED)
    kind = reason.value if reason is not None and by_state else "failed"
    selector = []
    if reason is not None and not by_state:
        selector.append(f"reason {reason.value}")
    if path is not None:
        selector.append(f"a path matching {path!r}")
    return f"nothing matched: no {kind} file" + (
        f" with {' and '.join(selector)}" if selector else ""
    )

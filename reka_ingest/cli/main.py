"""Entry point of the `reka-ingest` console script.

Logging is configured here, once, before any command runs. Each command lives
in its own module and is registered below; the stand-in server is imported
only by `reka_ingest.cli.fake_api`, and only when that command runs.
"""

from __future__ import annotations

import json
import os

import typer

from reka_ingest.cli import check as check_cmd
from reka_ingest.cli import delete as delete_cmd
from reka_ingest.cli import deployment, fake_api, run, scan, services, status, watch
from reka_ingest.cli import health as health_cmd
from reka_ingest.cli import metrics as metrics_cmd
from reka_ingest.cli import migrate as migrate_cmd
from reka_ingest.cli import plan as plan_cmd
from reka_ingest.cli import retry as retry_cmd
from reka_ingest.cli import web as web_cmd
from reka_ingest.core.errors import IngestError
from reka_ingest.core.logs import configure_logging
from reka_ingest.core.settings import effective, load_settings

app = typer.Typer(
    name="reka-ingest",
    help="Bulk image ingestion for Reka's Vision API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


# Commands that read a deployment: they take the parts of the run recorded in the
# data folder as defaults (reka_ingest.cli.deployment); `status`, `files`, `retry`
# and `metrics` also say which deployment they read.
READERS = frozenset(
    {"status", "files", "retry", "metrics", "check", "delete", "scan", "config", "web"}
)


@app.callback()
def _root(ctx: typer.Context) -> None:
    """Bulk image ingestion for Reka's Vision API."""
    if ctx.invoked_subcommand in READERS:
        ctx.obj = deployment.adopt(os.environ)


@app.command("config")
def config_command(
    as_json: bool = typer.Option(False, "--json", help="One JSON object instead of a table."),
) -> None:
    """Print the effective settings, secrets masked."""
    settings = load_settings()
    rows = effective(settings)
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    for group, values in rows.items():
        typer.echo(f"[{group}]")
        width = max(len(k) for k in values)
        for key, value in values.items():
            typer.echo(f"  {key.ljust(width)}  {'' if value is None else value}")


app.command("run")(run.command)
app.command("worker", context_settings=services.PASS_THROUGH)(services.worker)
app.command("beat", context_settings=services.PASS_THROUGH)(services.beat)
app.command("flower", context_settings=services.PASS_THROUGH)(services.flower)
app.command("status")(status.status)
app.command("files")(status.files)
app.command("fake-api")(fake_api.command)
app.command("metrics")(metrics_cmd.command)
app.command("migrate")(migrate_cmd.command)
app.command("health")(health_cmd.command)
app.command("retry")(retry_cmd.command)
app.command("check")(check_cmd.command)
app.command("delete")(delete_cmd.command)
app.command("watch")(watch.command)
app.command("scan")(scan.command)
app.command("web")(web_cmd.command)
app.command("plan")(plan_cmd.command)


def main() -> None:
    try:
        settings = load_settings()
    except IngestError as err:
        typer.echo(f"reka-ingest: {err}", err=True)
        raise SystemExit(2) from None
    configure_logging(settings.ingest.log_level, settings.ingest.log_format)
    try:
        app()
    except IngestError as err:
        typer.echo(f"reka-ingest: {err}", err=True)
        raise SystemExit(2) from None

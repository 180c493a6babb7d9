"""Entry point of the `reka-ingest` console script.

Logging is configured here, once, before any command runs. Each command lives
in its own module, imported only when that command runs: `reka-ingest files`
loads SQLAlchemy and the ledger, not Celery, kombu, the web app or the worker
(a module's imports are most of a short command's time, and of its memory).
`config` is main's own and imports none of them; `reka-ingest --help` (or a
name that is no command) imports them all, to list them; `app` (tests) is the
whole CLI, built on first use.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import sys
from collections.abc import Sequence

import typer

from reka_ingest.cli import deployment
from reka_ingest.core.errors import IngestError
from reka_ingest.core.logs import configure_logging
from reka_ingest.core.places import unwritable
from reka_ingest.core.settings import effective, load_settings

# Every command after `config`, in the order `--help` lists them: name -> the
# module and function that are the command. worker, beat and flower pass their
# unknown options on to Celery (their module's PASS_THROUGH).
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("reka_ingest.cli.run", "command"),
    "worker": ("reka_ingest.cli.services", "worker"),
    "beat": ("reka_ingest.cli.services", "beat"),
    "flower": ("reka_ingest.cli.services", "flower"),
    "status": ("reka_ingest.cli.status", "status"),
    "files": ("reka_ingest.cli.files", "command"),
    "fake-api": ("reka_ingest.cli.fake_api", "command"),
    "metrics": ("reka_ingest.cli.metrics", "command"),
    "migrate": ("reka_ingest.cli.migrate", "command"),
    "health": ("reka_ingest.cli.health", "command"),
    "retry": ("reka_ingest.cli.retry", "command"),
    "check": ("reka_ingest.cli.check", "command"),
    "delete": ("reka_ingest.cli.delete", "command"),
    "watch": ("reka_ingest.cli.watch", "command"),
    "scan": ("reka_ingest.cli.scan", "command"),
    "web": ("reka_ingest.cli.web", "command"),
    "plan": ("reka_ingest.cli.plan", "command"),
}
_PASS_THROUGH = frozenset({"worker", "beat", "flower"})

# Commands that read a deployment: they take the parts of the run recorded in the
# data folder as defaults (reka_ingest.cli.deployment); `status`, `files`, `retry`
# and `metrics` also say which deployment they read.
READERS = frozenset(
    {"status", "files", "retry", "metrics", "check", "delete", "scan", "config", "web"}
)


def _root(ctx: typer.Context) -> None:
    """Bulk image ingestion for Reka's Vision API."""
    if ctx.invoked_subcommand in READERS:
        ctx.obj = deployment.adopt(os.environ)


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


def _add(app: typer.Typer, name: str) -> None:
    module = importlib.import_module(COMMANDS[name][0])
    function = getattr(module, COMMANDS[name][1])
    if name in _PASS_THROUGH:
        app.command(name, context_settings=module.PASS_THROUGH)(function)
    else:
        app.command(name)(function)


def build(argv: Sequence[str] = ()) -> typer.Typer:
    """The CLI with the command `argv` names (its first word that is not an
    option), or with every command when it names none of them."""
    app = typer.Typer(
        name="reka-ingest",
        help="Bulk image ingestion for Reka's Vision API.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    app.callback()(_root)
    app.command("config")(config_command)
    name = next((arg for arg in argv if not arg.startswith("-")), None)
    if name != "config":
        for command in [name] if name in COMMANDS else list(COMMANDS):
            _add(app, command)
    return app


def __getattr__(attr: str) -> typer.Typer:
    """`app`: the whole CLI (for tests and tools), its commands imported on first use."""
    if attr != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
    return _whole_cli()


@functools.cache
def _whole_cli() -> typer.Typer:
    return build()


def main() -> None:
    try:
        settings = load_settings()
    except IngestError as err:
        typer.echo(f"reka-ingest: {err}", err=True)
        raise SystemExit(2) from None
    configure_logging(settings.ingest.log_level, settings.ingest.log_format)
    try:
        build(sys.argv[1:])()
    except IngestError as err:
        typer.echo(f"reka-ingest: {err}", err=True)
        raise SystemExit(2) from None
    except Exception as err:
        failure = _known_failure(err)
        if failure is None:
            raise
        typer.echo(f"reka-ingest: {failure}", err=True)
        raise SystemExit(2) from None


def _known_failure(err: Exception) -> IngestError | None:
    """`err` translated into one of ours when it is a failure of the service's
    surroundings, not of the program: the ledger's (`_ledger_failure`), or a place the
    service must write refusing (an OSError naming it: read-only, no permission, no
    room; reka_ingest.core.places). None for anything else, which stays a traceback."""
    return _ledger_failure(err) or unwritable(err)


def _ledger_failure(err: Exception) -> IngestError | None:
    """`err` as the ledger's failure (its database down, unreachable, locked, its disk
    full, its file damaged), or None when it is something else: a command that met
    one says so in a line, not a traceback. SQLAlchemy is imported only if it is
    loaded (it raised)."""
    if "sqlalchemy" not in sys.modules:
        return None
    from reka_ingest.ledger.db import ledger_failure  # noqa: PLC0415 - see the docstring

    try:  # the settings as the command read them (a deployment's record may set the URL)
        url = load_settings().ingest.ledger_url
    except IngestError:
        url = "INGEST_DATABASE_URL"
    return ledger_failure(url, err)

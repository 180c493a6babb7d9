"""`reka-ingest migrate`: bring the ledger's schema to the newest revision and
exit. Every command also migrates at start; in a deployment one short job does
it first (the compose `migrate` service, a Kubernetes Job), so many workers
starting at once find the schema ready."""

from __future__ import annotations

import typer

from reka_ingest.core.settings import load_settings, mask_url
from reka_ingest.ledger import open_ledger


def command() -> None:
    """Apply the ledger's migrations (safe to run any number of times) and exit."""
    url = load_settings().ingest.ledger_url
    ledger = open_ledger(url, migrate=True)
    try:
        revision = ledger.current_revision()
    finally:
        ledger.dispose()
    typer.echo(f"ledger at {mask_url(url)}: schema {revision}")

"""`reka-ingest web`: the web page of the ledger (reka_ingest.web), served by uvicorn.

Off loopback it refuses to start without INGEST_WEB_BASIC_AUTH, as Flower does.
"""

from __future__ import annotations

import typer

from reka_ingest.core.settings import load_settings
from reka_ingest.web.app import serve


def command(
    host: str | None = typer.Option(None, "--host", help="Address; default INGEST_WEB_HOST."),
    port: int | None = typer.Option(
        None, "--port", min=1, max=65535, help="Port; default INGEST_WEB_PORT."
    ),
) -> None:
    """Serve the web page: counts, trend, time to finish at the quota, folders, failures
    with thumbnails and a retry button per reason."""
    settings = load_settings(
        **{k: v for k, v in {"web_host": host, "web_port": port}.items() if v is not None}
    )
    serve(settings)

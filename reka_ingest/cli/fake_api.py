"""`reka-ingest fake-api`: run the stand-in Reka Vision server (standin/).

Every flag is also an environment variable (`STANDIN_` + the flag's name in
upper case with `_`, e.g. `--upload-quota` is `STANDIN_UPLOAD_QUOTA`); a flag
given on the command line wins. Flags left out are not passed on, so
`StandinConfig` reads them from the environment or uses its default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError

from reka_ingest.core.constants import STANDIN_DEV_API_KEY

_FAULTS = "Fault knobs (also changeable at runtime: POST /_standin/faults)"
_LIMITS = "Limits and quota"


def _explain(err: ValidationError) -> str:
    lines = []
    for item in err.errors():
        field = str(item["loc"][0]) if item["loc"] else "?"
        flag = "--" + field.replace("_", "-")
        lines.append(f"{flag} / STANDIN_{field.upper()}: {item['msg']} (got {item.get('input')!r})")
    return "invalid stand-in settings:\n  " + "\n  ".join(lines)


def command(  # noqa: PLR0917 - typer maps each knob to one parameter
    host: str | None = typer.Option(None, help="Interface to listen on."),
    port: int | None = typer.Option(None, help="Port (0: any free one)."),
    api_key: list[str] | None = typer.Option(
        None,
        "--api-key",
        help=f"Accepted key; repeat for more. None: {STANDIN_DEV_API_KEY!r}. "
        "Env: STANDIN_API_KEYS, comma-separated.",
    ),
    upload_quota: int | None = typer.Option(
        None, help="Upload requests per key per window, 0 = unlimited.", rich_help_panel=_LIMITS
    ),
    search_quota: int | None = typer.Option(
        None, help="Search requests per key per window, 0 = unlimited.", rich_help_panel=_LIMITS
    ),
    quota_window: float | None = typer.Option(
        None, help="Rolling quota window, seconds (default 24 h).", rich_help_panel=_LIMITS
    ),
    max_images_per_request: int | None = typer.Option(None, rich_help_panel=_LIMITS),
    max_image_bytes: int | None = typer.Option(None, rich_help_panel=_LIMITS),
    max_request_bytes: int | None = typer.Option(None, rich_help_panel=_LIMITS),
    storage_dir: Path | None = typer.Option(
        None, help="Keep images in this folder (default: in memory)."
    ),
    seed: int | None = typer.Option(None, help="Seed of the fault RNG, for repeatable drills."),
    access_log: bool | None = typer.Option(
        None, "--access-log/--no-access-log", help="uvicorn's access log (costs throughput)."
    ),
    fail_share: float | None = typer.Option(
        None, help="Share of /v1 requests answered 500.", rich_help_panel=_FAULTS
    ),
    drop_share: float | None = typer.Option(
        None, help="Share of /v1 requests whose connection drops.", rich_help_panel=_FAULTS
    ),
    drop_when: str | None = typer.Option(
        None, help="'before' or 'after' the server does the work.", rich_help_panel=_FAULTS
    ),
    latency: float | None = typer.Option(
        None, help="Seconds added to every /v1 request.", rich_help_panel=_FAULTS
    ),
    latency_jitter: float | None = typer.Option(
        None, help="Up to this many more seconds, random.", rich_help_panel=_FAULTS
    ),
    upload_latency: float | None = typer.Option(
        None, help="Seconds added to each upload request only.", rich_help_panel=_FAULTS
    ),
    burst_429_share: float | None = typer.Option(
        None, help="Chance a /v1 request starts a burst of 429s.", rich_help_panel=_FAULTS
    ),
    burst_429_length: int | None = typer.Option(
        None, help="Consecutive 429s per burst.", rich_help_panel=_FAULTS
    ),
    burst_429_retry_after: int | None = typer.Option(
        None, help="retry-after seconds sent in a burst.", rich_help_panel=_FAULTS
    ),
    index_delay: float | None = typer.Option(
        None, help="Seconds at indexing_status 1 before 2 (0: at once).", rich_help_panel=_FAULTS
    ),
    index_fail_share: float | None = typer.Option(
        None, help="Share of indexed images that end at status 3.", rich_help_panel=_FAULTS
    ),
    retention: float | None = typer.Option(
        None,
        help="Seconds an image is kept after its upload, then gone (0: for ever).",
        rich_help_panel=_FAULTS,
    ),
) -> None:
    """Run the stand-in Reka Vision API server (loopback by default) until Ctrl-C.

    Every flag is also an environment variable: STANDIN_ and the flag's name in
    capitals with underscores (--upload-quota: STANDIN_UPLOAD_QUOTA). Flags win.
    """
    # Imported here: the stand-in is loaded only when this command runs (reka_ingest/cli/main.py).
    from reka_ingest.standin.config import StandinConfig  # noqa: PLC0415 - load the stand-in only here
    from reka_ingest.standin.runner import serve  # noqa: PLC0415 - load the stand-in only here

    given: dict[str, Any] = {
        name: value
        for name, value in locals().items()
        if name in StandinConfig.model_fields and value is not None
    }
    if api_key:
        given["api_keys"] = tuple(api_key)
    try:
        config = StandinConfig(**given)
    except ValidationError as err:
        typer.echo(f"reka-ingest fake-api: {_explain(err)}", err=True)
        raise typer.Exit(2) from None
    storage = config.storage_dir or "memory"
    typer.echo(
        f"Stand-in Reka Vision API on http://{config.host}:{config.port} (images: {storage})"
    )
    if not config.api_keys:
        typer.echo(f"No --api-key given: accepting the development key {STANDIN_DEV_API_KEY!r}")
    serve(config)

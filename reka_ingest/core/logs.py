"""structlog, configured once, at a process's entry point.

JSON lines when stderr is not a terminal, readable colours when it is. Context
(batch id, task id) is bound with contextvars by whoever owns the unit of work
and cleared after it; this module only wires the processors.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

from reka_ingest.core.settings import LogFormat
from reka_ingest.core.text import shown

_SECRET_KEYS = frozenset({"api_key", "password", "authorization", "x-api-key", "redis_url"})


def _drop_secrets(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """Last line of defence: never let a key named like a secret reach the output."""
    for key in list(event):
        if key.lower() in _SECRET_KEYS:
            event[key] = "***"
    return event


def _show_names(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """File names are bytes: a value carrying bytes that are not UTF-8 is shown by
    the `%XX` rule (reka_ingest.core.text), so no log line fails to encode or lies."""
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = shown(value)
    return event


def configure_logging(
    level: str = "INFO", fmt: LogFormat = LogFormat.AUTO, *, stream: TextIO | None = None
) -> None:
    """Route structlog and the standard library (Celery, uvicorn, httpx) through one renderer,
    to `stream` (stderr by default; `reka-ingest run` gives its log file)."""
    stream = sys.stderr if stream is None else stream
    as_json = fmt is LogFormat.JSON or (fmt is LogFormat.AUTO and not stream.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _drop_secrets,
        _show_names,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *([structlog.processors.format_exc_info] if as_json else []),
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request at INFO; that is our canonical line's job.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    # Alembic narrates every migration check at INFO; only its problems matter here.
    logging.getLogger("alembic").setLevel(logging.WARNING)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger

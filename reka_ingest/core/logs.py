"""structlog, configured once, at a process's entry point.

JSON lines when stderr is not a terminal, readable colours when it is. Context
(batch id, task id) is bound with contextvars by whoever owns the unit of work
and cleared after it; this module only wires the processors.

structlog is imported when the first line is logged, not before: `import
structlog` imports its console renderer and, with it, rich (a good share of a
short command's start-up), and most commands never log a line. `configure_logging`
installs the standard library's handler at once and leaves structlog's half of
the setup to `_structlog()`, the one place that imports it; the loggers of
`get_logger` and the handler's formatter both go through it (code that logs
through structlog directly would bypass it: log through `get_logger`).
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO, cast

from reka_ingest.core.settings import LogFormat
from reka_ingest.core.text import printable, shown

if TYPE_CHECKING:
    from types import ModuleType

    from structlog.stdlib import BoundLogger

_SECRET_KEYS = frozenset({"api_key", "password", "authorization", "x-api-key", "redis_url"})

# structlog's half of the newest `configure_logging`, until structlog is imported.
_pending: Callable[[ModuleType], None] | None = None
_pending_lock = threading.Lock()


def _structlog() -> ModuleType:
    """structlog, configured as `configure_logging` last asked (imported on first use)."""
    global _pending  # noqa: PLW0603 - the one pending setup of this process
    import structlog  # noqa: PLC0415 - the one deferred import (see the module's docstring)

    if _pending is not None:
        with _pending_lock:  # no thread logs before it is configured
            if _pending is not None:
                _pending(structlog)
                _pending = None
    return structlog


def _drop_secrets(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """Last line of defence: never let a key named like a secret reach the output."""
    for key in list(event):
        if key.lower() in _SECRET_KEYS:
            event[key] = "***"
    return event


Processor = Callable[[Any, str, dict[str, Any]], dict[str, Any]]


def _texts_through(show: Callable[[str], str]) -> Processor:
    """A processor passing each text value of an event through `show`."""

    def processor(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
        for key, value in event.items():
            if isinstance(value, str):
                event[key] = show(value)
        return event

    return processor


# File names are bytes: a value carrying bytes that are not UTF-8 is shown by the
# `%XX` rule (reka_ingest.core.text), so no log line fails to encode or lies.
_show_names = _texts_through(shown)
# On a terminal, each text value is also one line that cannot steer it: a name's
# newline or escape sequence is shown escaped (`printable`). JSON escapes them itself.
_one_line_values = _texts_through(printable)


class _Formatter(logging.Formatter):
    """structlog's ProcessorFormatter, made on the first record it formats."""

    def __init__(self, make: Callable[[], logging.Formatter]) -> None:
        super().__init__()
        self._make = make

    @functools.cached_property
    def _formatter(self) -> logging.Formatter:
        return self._make()

    def format(self, record: logging.LogRecord) -> str:
        return self._formatter.format(record)


def configure_logging(
    level: str = "INFO", fmt: LogFormat = LogFormat.AUTO, *, stream: TextIO | None = None
) -> None:
    """Route structlog and the standard library (Celery, uvicorn, httpx) through one renderer,
    to `stream` (stderr by default; `reka-ingest run` gives its log file)."""
    global _pending  # noqa: PLW0603 - see _structlog
    stream = sys.stderr if stream is None else stream
    as_json = fmt is LogFormat.JSON or (fmt is LogFormat.AUTO and not stream.isatty())
    colors = stream.isatty()

    def shared(structlog: ModuleType) -> list[Any]:
        return [
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _drop_secrets,
            _show_names,
        ]

    def configure(structlog: ModuleType) -> None:
        structlog.configure(
            processors=[
                *shared(structlog),
                structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
            ],
            logger_factory=structlog.stdlib.LoggerFactory(),
            wrapper_class=structlog.stdlib.BoundLogger,
            cache_logger_on_first_use=True,
        )

    def formatter() -> logging.Formatter:
        structlog = _structlog()
        renderer: Any = (
            structlog.processors.JSONRenderer()
            if as_json
            else structlog.dev.ConsoleRenderer(colors=colors)
        )
        made: logging.Formatter = structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared(structlog),
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *([structlog.processors.format_exc_info] if as_json else [_one_line_values]),
                renderer,
            ],
        )
        return made

    with _pending_lock:
        _pending = configure
    if "structlog" in sys.modules:  # already paid for: configured now, as before
        _structlog()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_Formatter(formatter))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request at INFO; that is our canonical line's job.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    # Alembic narrates every migration check at INFO; only its problems matter here.
    logging.getLogger("alembic").setLevel(logging.WARNING)


class _Logger:
    """A module's structlog logger, made (and structlog imported) on its first use."""

    def __init__(self, name: str) -> None:
        self._name = name

    @functools.cached_property
    def _logger(self) -> BoundLogger:
        logger: BoundLogger = _structlog().stdlib.get_logger(self._name)
        return logger

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._logger, attr)


def get_logger(name: str) -> BoundLogger:
    """A module's logger (`log = get_logger(__name__)` at import costs nothing)."""
    return cast("BoundLogger", _Logger(name))

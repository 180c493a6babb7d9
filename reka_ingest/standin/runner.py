"""Start the stand-in server: blocking in this process, or in a thread for tests.

`serve(config)` is what `reka-ingest fake-api` runs: one uvicorn process,
uvloop and httptools, no access log unless asked (it costs throughput the
benchmarks measure).

`serve_in_thread(config)` is for tests and in-process tools: uvicorn runs in a
daemon thread on 127.0.0.1, the context manager returns once the socket
accepts connections, and stops the server (and joins the thread) on exit. Pass
`clock` to move time forward in a test (quota windows, index delay).
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any, Final

import uvicorn
from starlette.applications import Starlette

from reka_ingest.core.logs import get_logger
from reka_ingest.standin.app import create_app
from reka_ingest.standin.config import StandinConfig
from reka_ingest.standin.state import StandinState

LOOPBACK: Final = "127.0.0.1"
STARTUP_TIMEOUT_SECONDS: Final = 10.0
SHUTDOWN_TIMEOUT_SECONDS: Final = 10.0
_STARTUP_POLL_SECONDS: Final = 0.005
_STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)

log = get_logger(__name__)


def _uvicorn_config(app: Starlette, config: StandinConfig, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=config.access_log,
        log_config=None,  # keep the process's own (structlog) logging setup
        server_header=False,
        date_header=False,
    )


def _stopped_by(signum: int, _frame: FrameType | None) -> None:
    log.info("standin_stop", signal=signal.Signals(signum).name)


@contextmanager
def _stop_signals_end_cleanly() -> Iterator[None]:
    """Make Ctrl-C and SIGTERM a normal, exit-0 stop.

    uvicorn shuts down gracefully on either, then re-raises the signal to the
    handler that was installed before it ran (normally: KeyboardInterrupt, or
    death by SIGTERM). Installing `_stopped_by` first makes that re-raise a
    log line, so a supervisor sees a clean exit.
    """
    previous = {sig: signal.signal(sig, _stopped_by) for sig in _STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve(config: StandinConfig) -> None:
    """Run the server in this process until Ctrl-C or SIGTERM (main thread only)."""
    app = create_app(StandinState.create(config, time.time))
    log.info(
        "standin_start",
        host=config.host,
        port=config.port,
        storage=str(config.storage_dir) if config.storage_dir else "memory",
    )
    with _stop_signals_end_cleanly():
        uvicorn.Server(_uvicorn_config(app, config, config.host, config.port)).run()


@dataclass(frozen=True, slots=True)
class RunningStandin:
    """A stand-in started by `serve_in_thread`: where it listens and its live state."""

    base_url: str
    host: str
    port: int
    app: Starlette
    state: StandinState  # store, stats, quotas and fault knobs (tests read these)
    config: StandinConfig

    @property
    def api_key(self) -> str:
        """One key the server accepts (the dev key when none was configured)."""
        return sorted(self.config.accepted_keys)[0]

    @property
    def headers(self) -> dict[str, str]:
        """Auth headers for plain httpx calls in tests."""
        return {"X-Api-Key": self.api_key}


def _bound_port(server: uvicorn.Server) -> int:
    for srv in getattr(server, "servers", []):
        for sock in srv.sockets:
            port: Any = sock.getsockname()[1]
            return int(port)
    raise RuntimeError("stand-in server started without a listening socket")


def _pick_port(config: StandinConfig) -> int:
    """An explicitly configured port, else 0 (the OS picks a free one)."""
    return config.port if "port" in config.model_fields_set else 0


@contextmanager
def serve_in_thread(
    config: StandinConfig | None = None, clock: Callable[[], float] | None = None
) -> Iterator[RunningStandin]:
    """Serve on 127.0.0.1 in a background thread for the duration of the block.

    The port is `config.port` when it was set explicitly (argument or
    `STANDIN_PORT`), otherwise a free one chosen by the OS.
    """
    config = config if config is not None else StandinConfig()
    state = StandinState.create(config, clock if clock is not None else time.time)
    app = create_app(state)
    server = uvicorn.Server(_uvicorn_config(app, config, LOOPBACK, _pick_port(config)))
    thread = threading.Thread(target=server.run, name="standin-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(SHUTDOWN_TIMEOUT_SECONDS)
            raise RuntimeError("stand-in server did not start")
        time.sleep(_STARTUP_POLL_SECONDS)
    port = _bound_port(server)
    # `started` is set once the socket listens; confirm it accepts before handing it out.
    with socket.create_connection((LOOPBACK, port), timeout=STARTUP_TIMEOUT_SECONDS):
        pass
    try:
        yield RunningStandin(
            base_url=f"http://{LOOPBACK}:{port}",
            host=LOOPBACK,
            port=port,
            app=app,
            state=state,
            config=config,
        )
    finally:
        server.should_exit = True
        thread.join(SHUTDOWN_TIMEOUT_SECONDS)

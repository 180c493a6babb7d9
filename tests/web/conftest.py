"""Fixtures of the web page's tests: the app over a real ledger (SQLite and
PostgreSQL) and the real bundled Redis, rows written as the service writes them,
and clients that come from loopback or from elsewhere."""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

with warnings.catch_warnings():
    # Starlette 1.x asks for httpx2 behind its TestClient; httpx is what this project has.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from reka_ingest.core.settings import Settings
from reka_ingest.core.states import FileState, Origin
from reka_ingest.ledger import Ledger
from reka_ingest.ledger.schema import File
from reka_ingest.web.app import create_app
from reka_ingest.web.guard import CsrfTokens
from tests.support.images import write_image

BASE = "http://127.0.0.1:8766"
LOOPBACK = ("127.0.0.1", 50000)
ELSEWHERE = ("203.0.113.9", 50000)  # TEST-NET-3: never this machine


def add_file(ledger: Ledger, *, path: str, work_path: str, **fields: Any) -> int:
    """One ledger row as the service writes it; `fields` override by column name."""
    now = time.time()
    values: dict[str, Any] = {
        "path": path,
        "source_root": "/srv/inbox",
        "work_path": work_path,
        "origin": Origin.EVENT,
        "size": 1,
        "mtime": now,
        "state": FileState.QUEUED,
        "seen_at": now,
        "updated_at": now,
    }
    values.update(fields)
    with ledger.write() as s:
        row = File(**values)
        s.add(row)
        s.flush()
        return row.id


def add_failed(
    settings: Settings,
    ledger: Ledger,
    name: str,
    *,
    reason: str,
    seed: int = 0,
    folder: str = "cam1",
) -> int:
    """A file that failed for `reason`, its bytes in failed/ beside its reason file."""
    ingest = settings.ingest
    failed = write_image(ingest.failed_path / name, seed)
    (ingest.failed_path / f"{name}.error.json").write_text(json.dumps({"reason": reason}))
    now = time.time()
    return add_file(
        ledger,
        path=f"{folder}/{name}",
        work_path=str(ingest.work_dir / f"claim-{name}" / name),
        final_path=f"{failed}.error.json",
        size=failed.stat().st_size,
        state=FileState.FAILED,
        reason=reason,
        message=f"the API said no to {name}",
        finished_at=now,
    )


@pytest.fixture
def web_settings(make_settings: Callable[..., Settings], redis_url: str) -> Settings:
    return make_settings(redis_url=redis_url)


@pytest.fixture
def tokens() -> CsrfTokens:
    return CsrfTokens(b"k" * 32)


@pytest.fixture
def make_client(
    web_settings: Settings, ledger: Ledger, tokens: CsrfTokens
) -> Iterator[Callable[..., TestClient]]:
    """A client of the app over the test's ledger; `client` is where it comes from,
    `settings` other settings (basic auth)."""
    made: list[TestClient] = []

    def make(
        client: tuple[str, int] = LOOPBACK,
        settings: Settings | None = None,
        base_url: str = BASE,
        **app_options: Any,
    ) -> TestClient:
        app = create_app(settings or web_settings, ledger=ledger, tokens=tokens, **app_options)
        tc = TestClient(app, base_url=base_url, client=client, follow_redirects=False)
        tc.__enter__()
        made.append(tc)
        return tc

    yield make
    for tc in made:
        tc.__exit__(None, None, None)


def thumb_source(tmp_path: Path, seed: int = 1) -> Path:
    return write_image(tmp_path / "images" / f"img{seed}.jpg", seed, size=(400, 300))


@pytest.fixture
def live_server(web_settings: Settings, ledger: Ledger, tokens: CsrfTokens) -> Iterator[str]:
    """The app served by a real uvicorn on 127.0.0.1, in a thread; its base URL."""
    import threading  # noqa: PLC0415 - only this fixture runs a server

    import uvicorn  # noqa: PLC0415

    from reka_ingest.core.bundled_redis import free_port  # noqa: PLC0415

    port = free_port()
    app = create_app(web_settings, ledger=ledger, tokens=tokens)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def raw_get(base: str, raw_path: str) -> tuple[int, dict[str, str], bytes]:
    """GET `raw_path` exactly as written (no client-side normalising of `..` or `%2e`)."""
    import socket  # noqa: PLC0415

    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"GET {raw_path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
        )
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return status, headers, body

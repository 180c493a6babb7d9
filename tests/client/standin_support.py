"""The stand-in server for client tests: started on loopback, steered through `/_standin/`.

Faults and resets go through the server's own HTTP surface (as drills in
another process would), never by touching its state from the test thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from reka_ingest.reka.client import RekaClient
from reka_ingest.reka.models import UploadItem
from reka_ingest.standin.config import StandinConfig
from reka_ingest.standin.runner import RunningStandin, serve_in_thread
from tests.client.conftest import API_KEY
from tests.support.clock import Clock
from tests.support.images import write_image

ADMIN_TIMEOUT = httpx.Timeout(10.0)
CLIENT_TIMEOUT = httpx.Timeout(connect=5.0, read=30.0, write=30.0, pool=5.0)
START_TIME = 1_700_000_000.0


@contextmanager
def running_standin(clock: Clock | None = None, **config: Any) -> Iterator[RunningStandin]:
    """A stand-in taking only API_KEY, with a fixed fault seed and `config` on top."""
    options: dict[str, Any] = {"api_keys": (API_KEY,), "seed": 7}
    options.update(config)
    with serve_in_thread(StandinConfig(**options), clock=clock) as server:
        assert server.base_url.startswith("http://127.0.0.1:")
        yield server


def admin_client(server: RunningStandin) -> httpx.Client:
    """A plain httpx client for `/_standin/` calls (one per batch of calls: cheap to reuse)."""
    return httpx.Client(
        base_url=f"{server.base_url}/_standin/", headers=server.headers, timeout=ADMIN_TIMEOUT
    )


def admin(
    server: RunningStandin,
    method: str,
    path: str,
    body: Any = None,
    *,
    http: httpx.Client | None = None,
) -> Any:
    """One call to the stand-in's own surface; an error status fails the test."""
    if http is None:
        with admin_client(server) as own:
            return admin(server, method, path, body, http=own)
    response = http.request(method, path, json=body)
    response.raise_for_status()
    return response.json()


def set_faults(server: RunningStandin, **knobs: Any) -> None:
    admin(server, "POST", "faults", knobs)


def reset(server: RunningStandin) -> None:
    """No images, no quota use, fault knobs as configured."""
    admin(server, "POST", "reset")


def client_for(
    server: RunningStandin, *, api_key: str = API_KEY, timeout: httpx.Timeout = CLIENT_TIMEOUT
) -> RekaClient:
    return RekaClient(base_url=server.base_url, api_key=api_key, timeout=timeout)


def jpeg_items(folder: Path, count: int, *, first_seed: int = 0) -> list[UploadItem]:
    """`count` distinct noisy JPEGs, each with metadata naming its position."""
    items = []
    for i in range(count):
        path = write_image(folder / f"img-{first_seed + i:04d}.jpg", first_seed + i)
        items.append(
            UploadItem(
                path=path,
                filename=path.name,
                content_type="image/jpeg",
                metadata={"camera_id": f"cam-{i}", "caption": f"picture number {i}"},
            )
        )
    return items

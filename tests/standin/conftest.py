"""A real stand-in server on loopback per test, driven by plain httpx.

`Clock` is the only fake: tests move time to age quota windows and indexing.
`upload()` builds the multipart body the way Reka documents it, so each test
says only what differs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest

from reka_ingest.standin.config import StandinConfig
from reka_ingest.standin.runner import RunningStandin, serve_in_thread
from tests.support.clock import Clock
from tests.support.images import image_bytes

KEY = "standin-test-key"
OTHER_KEY = "standin-other-key"
START = 1_700_000_000.0


class Api:
    """Plain httpx against one running stand-in, key included."""

    def __init__(self, server: RunningStandin) -> None:
        self.server = server
        self.http = httpx.Client(base_url=server.base_url, headers={"X-Api-Key": KEY}, timeout=10)

    def upload(
        self,
        images: list[bytes],
        metas: list[dict[str, Any]] | None = None,
        *,
        index: bool = True,
        names: list[str] | None = None,
        metadata: str | None = None,
    ) -> httpx.Response:
        names = names or [f"img{i:03d}.jpg" for i in range(len(images))]
        files = [("images", (n, data, "image/jpeg")) for n, data in zip(names, images, strict=True)]
        if metadata is None:
            metas = metas if metas is not None else [{} for _ in images]
            metadata = json.dumps(
                {"requests": [{"indexing_config": {"index": index}, "metadata": m} for m in metas]}
            )
        return self.http.post("/v1/images/upload", files=files, data={"metadata": metadata})

    def upload_ok(self, images: list[bytes], **kwargs: Any) -> list[dict[str, Any]]:
        response = self.upload(images, **kwargs)
        assert response.status_code == 200, response.text
        results: list[dict[str, Any]] = response.json()["results"]
        return results

    def admin(self, path: str) -> Any:
        response = self.http.get(f"/_standin/{path}")
        assert response.status_code == 200, response.text
        return response.json()

    def faults(self, **knobs: Any) -> dict[str, Any]:
        response = self.http.post("/_standin/faults", json=knobs)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The inner error object; asserts the envelope's shape on the way."""
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert isinstance(error["type"], str)
    assert isinstance(error["message"], str)
    assert error["message"]
    return error


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
def make_api(clock: Clock) -> Iterator[Callable[..., Api]]:
    """Start a stand-in with config overrides; stopped when the test ends."""
    with ExitStack() as stack:

        def make(**overrides: Any) -> Api:
            settings = {"api_keys": (KEY, OTHER_KEY), "port": 0, "seed": 3, **overrides}
            server = stack.enter_context(serve_in_thread(StandinConfig(**settings), clock=clock))
            api = Api(server)
            stack.callback(api.http.close)
            return api

        yield make


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    return make_api()


@pytest.fixture(scope="session")
def jpegs() -> list[bytes]:
    """Sixty distinct small JPEGs."""
    return [image_bytes(seed) for seed in range(60)]

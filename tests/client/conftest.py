"""Fixtures for the Reka client tests: a client over `httpx.MockTransport`, test images."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import httpx
import pytest
from PIL import Image as PILImage

from reka_ingest.core.constants import DEFAULT_API_PATH_PREFIX
from reka_ingest.reka.client import RekaClient

# Looks like a key and is easy to search for in any text that must not hold it.
API_KEY = "sk-test-DO-NOT-LEAK-4f9a2c"
BASE_URL = "http://127.0.0.1:9"  # never dialled: every mock-transport test answers in-process

Handler = Callable[[httpx.Request], httpx.Response]


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (8, 8), seed: int = 0) -> bytes:
    """A tiny real image, so a sniffing server accepts it."""
    buffer = io.BytesIO()
    color = (seed * 37 % 256, seed * 91 % 256, seed * 53 % 256)
    PILImage.new("RGB", size, color).save(buffer, format=fmt)
    return buffer.getvalue()


def write_image(folder: Path, name: str, fmt: str = "PNG", seed: int = 0) -> Path:
    path = folder / name
    path.write_bytes(image_bytes(fmt, seed=seed))
    return path


def image_json(image_id: str = "img-1", status: int = 1) -> dict[str, object]:
    return {
        "image_id": image_id,
        "image_url": f"http://127.0.0.1/files/{image_id}",
        "indexing_status": status,
        "upload_timestamp": 1_700_000_000.5,
    }


class ClientFactory(Protocol):
    def __call__(
        self,
        handler: Handler,
        *,
        base_url: str = ...,
        path_prefix: str = ...,
        timeout: httpx.Timeout | None = ...,
    ) -> RekaClient: ...


@pytest.fixture
def make_client() -> Iterator[ClientFactory]:
    """`make_client(handler)`: a RekaClient whose requests `handler` answers in-process."""
    made: list[RekaClient] = []

    def factory(
        handler: Handler,
        *,
        base_url: str = BASE_URL,
        path_prefix: str = DEFAULT_API_PATH_PREFIX,
        timeout: httpx.Timeout | None = None,
    ) -> RekaClient:
        client = RekaClient(
            base_url=base_url,
            api_key=API_KEY,
            path_prefix=path_prefix,
            timeout=timeout,
            transport=httpx.MockTransport(handler),
        )
        made.append(client)
        return client

    yield factory
    for client in made:
        client.close()

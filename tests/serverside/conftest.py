"""Fixtures of the server-side tests: the worker tests' stand-in on loopback, one
clock for it and the runtimes, runtimes on each ledger database with real Redis;
and helpers that act behind the ledger's back (uploads it never hears of, images
the stand-in forgets)."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import pytest

from reka_ingest.reka.models import UploadItem
from reka_ingest.standin.runner import RunningStandin
from tests.worker.conftest import clock, make_rt, standin  # noqa: F401 - fixtures shared
from worker.runtime import Runtime

FAST = 1000.0  # requests per second for the tests: pacing is not what they test


@pytest.fixture
def rt(make_rt: Callable[..., Runtime]) -> Runtime:  # noqa: F811 - the shared fixture
    return make_rt(check_requests_per_second=FAST)


def upload_behind(rt: Runtime, blobs: Sequence[bytes], tmp: Path) -> list[str]:
    """Upload these bytes straight to the stand-in, never telling the ledger; their ids."""
    items = []
    for n, data in enumerate(blobs):
        path = tmp / f"behind-{hashlib.sha256(data).hexdigest()[:12]}-{n}.jpg"
        path.write_bytes(data)
        items.append(UploadItem(path=path, filename=path.name, content_type="image/jpeg"))
    return [image.image_id for image in rt.client.upload(items).images]


def expire(server: RunningStandin, image_id: str) -> None:
    """Make the stand-in forget one image, as its retention running out would."""
    r = httpx.post(
        f"{server.base_url}/_standin/images/{image_id}/expire", headers=server.headers, timeout=10
    )
    r.raise_for_status()


def copies_by_sha(server: RunningStandin) -> Counter[str]:
    """How many images the stand-in holds of each content (by sha256)."""
    store = server.state.store
    out: Counter[str] = Counter()
    for record in store.records():
        data = store.data(record.image_id)
        if data is not None:
            out[hashlib.sha256(data).hexdigest()] += 1
    return out

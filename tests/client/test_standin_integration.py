"""RekaClient against the stand-in server over real HTTP on 127.0.0.1.

Every endpoint, and every error class the stand-in can produce, through the
real socket path (uvicorn, h11/httptools, httpx's pool). Time moves by a fake
clock on the server; the only real waiting is the timeout test's 50 ms.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from reka_ingest.core.constants import REQUEST_ID_HEADER, IndexingStatus
from reka_ingest.core.errors import (
    ApiAuthError,
    ApiConnectionError,
    ApiNotFound,
    ApiPayloadTooLarge,
    ApiRateLimited,
    ApiServerError,
    ApiTimeout,
    ApiValidationError,
)
from reka_ingest.reka.client import RekaClient
from reka_ingest.reka.models import SearchMode, UploadItem
from reka_ingest.reka.multipart import PIECE_BYTES
from reka_ingest.standin.runner import RunningStandin
from tests.client.conftest import API_KEY
from tests.client.standin_support import (
    START_TIME,
    admin,
    admin_client,
    client_for,
    jpeg_items,
    reset,
    running_standin,
    set_faults,
)
from tests.support.clock import Clock
from tests.support.images import image_bytes

INDEX_DELAY = 30.0
MAX_IMAGE_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock(START_TIME)


@pytest.fixture(scope="module")
def server(clock: Clock) -> Iterator[RunningStandin]:
    with running_standin(clock, index_delay=INDEX_DELAY, max_image_bytes=MAX_IMAGE_BYTES) as srv:
        yield srv


@pytest.fixture
def client(server: RunningStandin) -> Iterator[RekaClient]:
    reset(server)
    with client_for(server) as reka:
        yield reka


# --- the endpoints ------------------------------------------------------------------------


def test_every_endpoint(
    client: RekaClient, server: RunningStandin, clock: Clock, tmp_path: Path
) -> None:
    items = jpeg_items(tmp_path, 2)
    items[0] = items[0].model_copy(
        update={
            "metadata": {
                "caption": "a red car at the gate",
                "recorded_timestamp_utc": 1_700_000_000,
                "detection_metadata": [{"class_name": "car", "bounding_box": [1, 2, 3, 4]}],
            }
        }
    )
    items.append(items[1].model_copy(update={"index": False, "filename": "not-indexed.jpg"}))

    uploaded = client.upload(items)
    assert uploaded.request_id
    assert [image.indexing_status for image in uploaded.images] == [
        IndexingStatus.IN_PROGRESS,
        IndexingStatus.IN_PROGRESS,
        IndexingStatus.NOT_INDEXED,
    ]
    assert len({image.image_id for image in uploaded.images}) == 3
    assert uploaded.rate_limit.limit is not None  # headers present and parsed

    first = uploaded.images[0]
    fetched = client.get(first.image_id)
    assert fetched.image_id == first.image_id
    assert fetched.indexing_status == IndexingStatus.IN_PROGRESS
    assert fetched.request_id and fetched.request_id != uploaded.request_id
    image_file = httpx.get(fetched.image_url, timeout=10.0)
    assert image_file.content == items[0].path.read_bytes()

    assert client.search("red car") == []  # nothing is indexed yet
    clock.advance(INDEX_DELAY + 1)
    assert client.get(first.image_id).indexing_status == IndexingStatus.INDEXED

    hits = client.search("red car", max_results=5, search_mode=SearchMode.JOINED, threshold=0.1)
    assert [hit.image_id for hit in hits] == [first.image_id]
    assert hits[0].score is not None
    assert 0 < hits[0].score <= 1
    assert hits[0].image_metadata.caption == "a red car at the gate"
    assert hits[0].image_metadata.recorded_timestamp_utc == 1_700_000_000
    detections = hits[0].image_metadata.detection_metadata
    assert detections is not None
    assert detections[0].class_name == "car"

    listed = client.list(limit=100)
    assert [image.image_id for image in listed] == [image.image_id for image in uploaded.images]
    assert [image.image_id for image in client.list(limit=1, offset=1)] == [
        uploaded.images[1].image_id
    ]
    assert client.list(offset=3) == []

    deleted = client.delete(first.image_id)
    assert deleted.status
    assert deleted.message
    with pytest.raises(ApiNotFound):
        client.get(first.image_id)
    assert len(client.list()) == 2


def test_fifty_images_come_back_in_input_order(
    client: RekaClient, server: RunningStandin, tmp_path: Path
) -> None:
    items = jpeg_items(tmp_path, 50, first_seed=100)
    result = client.upload(items)
    assert len(result.images) == 50
    with admin_client(server) as http:
        details = [
            admin(server, "GET", f"images/{image.image_id}", http=http) for image in result.images
        ]
    for item, detail in zip(items, details, strict=True):
        assert detail["filename"] == item.filename
        assert detail["sha256"] == hashlib.sha256(item.path.read_bytes()).hexdigest()
        assert detail["metadata"] == item.metadata
        assert detail["index"] is True


# --- every error the stand-in can produce --------------------------------------------------


def assert_request_id(error: Exception) -> None:
    request_id = getattr(error, "request_id", None)
    assert isinstance(request_id, str)
    assert request_id


def test_unknown_key_is_401(server: RunningStandin) -> None:
    wrong = "sk-wrong-key-0000"
    with client_for(server, api_key=wrong) as client, pytest.raises(ApiAuthError) as caught:
        client.list()
    assert caught.value.status == 401
    assert caught.value.error_type == "authentication_error"
    assert_request_id(caught.value)
    assert wrong not in str(caught.value)
    assert API_KEY not in str(caught.value)


def test_not_an_image_is_400_with_param(client: RekaClient, tmp_path: Path) -> None:
    items = jpeg_items(tmp_path, 2)
    text = tmp_path / "notes.jpg"
    text.write_text("these are not the bytes of an image")
    items.append(UploadItem(path=text, filename=text.name, content_type="image/jpeg"))
    with pytest.raises(ApiValidationError) as caught:
        client.upload(items)
    assert type(caught.value) is ApiValidationError
    assert caught.value.status == 400
    assert caught.value.param == "images[2]"
    assert_request_id(caught.value)


def test_unknown_image_is_404(client: RekaClient) -> None:
    with pytest.raises(ApiNotFound) as caught:
        client.get("no-such-image")
    assert caught.value.error_type == "not_found_error"
    assert_request_id(caught.value)
    with pytest.raises(ApiNotFound):
        client.delete("no-such-image")


def test_image_too_large_is_413(client: RekaClient, tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    big.write_bytes(image_bytes(1, fmt="PNG", size=(256, 256)))  # noise: ~190 KB
    assert big.stat().st_size > MAX_IMAGE_BYTES
    with pytest.raises(ApiPayloadTooLarge) as caught:
        client.upload([UploadItem(path=big, filename="big.png", content_type="image/png")])
    assert caught.value.status == 413
    assert caught.value.param == "images[0]"
    assert_request_id(caught.value)


def test_too_many_images_is_413(client: RekaClient, tmp_path: Path) -> None:
    small = jpeg_items(tmp_path, 1)[0]
    with pytest.raises(ApiPayloadTooLarge) as caught:
        client.upload([small] * 101)
    assert caught.value.param == "images"


def test_request_body_too_large_is_413_before_the_upload_ends(tmp_path: Path) -> None:
    """The server refuses by Content-Length and answers while the client still writes:
    the client must read that answer, not fail on the half-sent body."""
    big = tmp_path / "big.png"
    with big.open("wb") as out:
        out.write(image_bytes(1, fmt="PNG"))
        out.write(bytes(5 * 1024 * 1024))
    item = UploadItem(path=big, filename="big.png", content_type="image/png")
    with (
        running_standin(max_request_bytes=100_000) as server,
        client_for(server) as client,
        pytest.raises(ApiPayloadTooLarge) as caught,
    ):
        client.upload([item])
    assert caught.value.status == 413
    assert_request_id(caught.value)


def test_server_fault_is_500(client: RekaClient, server: RunningStandin) -> None:
    set_faults(server, fail_share=1.0)
    with pytest.raises(ApiServerError) as caught:
        client.list()
    assert caught.value.status == 500
    assert caught.value.retryable
    assert_request_id(caught.value)


@pytest.mark.parametrize("when", ["before", "after"])
def test_dropped_connection(client: RekaClient, server: RunningStandin, when: str) -> None:
    set_faults(server, drop_share=1.0, drop_when=when)
    with pytest.raises(ApiConnectionError) as caught:
        client.list()
    assert caught.value.retryable
    assert caught.value.request_id is None  # no whole answer, so no request id to read
    set_faults(server, drop_share=0.0)
    assert client.list() == []  # the pool recovers from the dead connection


def test_latency_over_the_read_timeout(client: RekaClient, server: RunningStandin) -> None:
    set_faults(server, latency=0.5)
    with pytest.raises(ApiTimeout) as caught:
        client.list(timeout=httpx.Timeout(5.0, read=0.05))
    assert caught.value.retryable
    assert "ReadTimeout" in str(caught.value)


def test_injected_429_burst(client: RekaClient, server: RunningStandin) -> None:
    set_faults(server, burst_429_share=1.0, burst_429_retry_after=7)
    with pytest.raises(ApiRateLimited) as caught:
        client.search("anything")
    assert caught.value.retry_after == 7
    assert caught.value.error_type == "rate_limit_error"
    assert caught.value.rate_limit.remaining == 0
    assert_request_id(caught.value)


def test_upload_quota_is_429_with_headers(tmp_path: Path) -> None:
    clock = Clock(START_TIME)
    with running_standin(clock, upload_quota=2, quota_window=3600) as server:
        items = jpeg_items(tmp_path, 1)
        with client_for(server) as client:
            first = client.upload(items)
            assert (first.rate_limit.limit, first.rate_limit.remaining) == (2, 1)
            assert first.rate_limit.retry_after_seconds == 0
            clock.advance(600)
            assert client.upload(items).rate_limit.remaining == 0
            with pytest.raises(ApiRateLimited) as caught:
                client.upload(items)
            error = caught.value
            assert error.status == 429
            assert error.error_type == "rate_limit_error"
            assert (error.rate_limit.limit, error.rate_limit.remaining) == (2, 0)
            # The oldest request leaves the window 3000 s from now: that is the wait.
            assert error.retry_after == 3000
            assert_request_id(error)
            clock.advance(3000)
            assert client.upload(items).rate_limit.remaining == 0


def test_request_id_matches_the_header(server: RunningStandin, tmp_path: Path) -> None:
    """The id the client reports is the response's X-Request-ID, not one it made up."""
    seen: list[str] = []

    def record(response: httpx.Response) -> None:
        seen.append(response.headers[REQUEST_ID_HEADER])

    reset(server)
    with client_for(server) as client:
        client._http.event_hooks["response"].append(record)
        result = client.upload(jpeg_items(tmp_path, 1))
        with pytest.raises(ApiNotFound) as caught:
            client.get("missing")
    assert seen == [result.request_id, caught.value.request_id]


# --- a body whose end is held back ------------------------------------------------------


class _Refused(Exception):
    """What `before_end` raises in the test below (not an error the client knows)."""


def test_a_request_whose_last_piece_is_refused_is_never_stored(
    client: RekaClient, server: RunningStandin, tmp_path: Path
) -> None:
    """The uploader holds an upload's last piece until its files are marked in the
    ledger; if that fails, the request must never reach the server whole."""
    items = []
    for i in range(32):  # ~18 KB each: a body of several pieces, most of it already sent
        path = tmp_path / f"big-{i:02d}.jpg"
        path.write_bytes(image_bytes(900 + i, size=(150, 150)))
        items.append(UploadItem(path=path, filename=path.name, content_type="image/jpeg"))
    assert sum(item.path.stat().st_size for item in items) > 2 * PIECE_BYTES
    calls: list[int] = []

    def refuse() -> None:
        calls.append(len(calls))
        raise _Refused

    with pytest.raises(_Refused):  # raised as it is: not taken for a transport error
        client.upload(items, before_end=refuse)
    assert calls == [0]
    stats = admin(server, "GET", "stats")
    assert stats["uploads_accepted"] == 0 and stats["images_received"] == 0

    marked: list[bool] = []
    result = client.upload(items, before_end=lambda: marked.append(True))
    assert marked == [True] and len(result.images) == len(items)
    assert admin(server, "GET", "stats")["uploads_accepted"] == 1

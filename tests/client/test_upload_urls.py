"""`RekaClient.upload_urls`: one request, no file parts, the URLs inside `metadata`.

The request's exact shape over `httpx.MockTransport` (both encodings); then
the real thing: the stand-in on loopback fetching real JPEG and PNG bytes from
a second loopback server (tests.support.url_images), the results checked
through get, list and the stand-in's record of the metadata; a bad URL's 400
names its index, which is what lets a caller split a batch down to it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from reka_ingest.core.errors import (
    ApiPayloadTooLarge,
    ApiProtocolError,
    ApiUsageError,
    ApiValidationError,
)
from reka_ingest.reka.client import RekaClient
from reka_ingest.reka.models import UrlItem
from reka_ingest.standin.metadata import SECURITY_KEYS
from reka_ingest.standin.runner import RunningStandin
from tests.client.conftest import API_KEY, ClientFactory, image_json
from tests.client.standin_support import admin, admin_client, client_for, running_standin
from tests.support.url_images import ImageServer, closed_port_url, serve_images

URLS = ["https://images.example/a.jpg", "http://127.0.0.1:8000/b%20c.png?sig=xyz"]


def _answer(count: int) -> httpx.Response:
    return httpx.Response(200, json={"results": [image_json(f"img-{i}") for i in range(count)]})


def _capture(seen: list[httpx.Request], count: int | None = None) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        request.read()
        seen.append(request)
        return _answer(len(URLS) if count is None else count)

    return handler


def _items() -> list[UrlItem]:
    return [
        UrlItem(url=URLS[0], metadata={"camera_id": "cam-1", "caption": "café"}),
        UrlItem(url=URLS[1], index=False),
    ]


EXPECTED_METADATA = (
    '{"requests":[{"indexing_config":{"index":true},'
    '"metadata":{"camera_id":"cam-1","caption":"caf\\u00e9"}},'
    '{"indexing_config":{"index":false},"metadata":{}}],'
    f'"image_urls":{json.dumps(URLS, separators=(",", ":"))}}}'
)


# --- the request, over a mock transport ------------------------------------------


def test_default_is_one_urlencoded_request_with_the_urls_in_metadata(
    make_client: ClientFactory,
) -> None:
    seen: list[httpx.Request] = []
    result = make_client(_capture(seen)).upload_urls(_items())
    (request,) = seen
    assert request.method == "POST"
    assert request.url.path == "/v1/images/upload"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.headers["x-api-key"] == API_KEY
    form = parse_qs(request.content.decode(), strict_parsing=True)
    assert form == {"metadata": [EXPECTED_METADATA]}
    assert [image.image_id for image in result.images] == ["img-0", "img-1"]
    assert result.sent == []


def test_multipart_sends_only_the_metadata_field(make_client: ClientFactory) -> None:
    seen: list[httpx.Request] = []
    result = make_client(_capture(seen)).upload_urls(_items(), encoding="multipart")
    (request,) = seen
    kind, _, boundary = request.headers["content-type"].partition("; boundary=")
    assert kind == "multipart/form-data"
    body = request.content
    assert body.count(b"Content-Disposition") == 1
    assert b'Content-Disposition: form-data; name="metadata"\r\n\r\n' in body
    assert b"filename" not in body
    assert EXPECTED_METADATA.encode() in body
    assert body.endswith(f"--{boundary}--\r\n".encode())
    assert result.sent == []


def test_a_result_count_that_differs_is_a_protocol_error(make_client: ClientFactory) -> None:
    seen: list[httpx.Request] = []
    client = make_client(_capture(seen, count=1))
    with pytest.raises(ApiProtocolError, match="sent 2 images but the answer has 1"):
        client.upload_urls(_items())


def test_nothing_to_send_or_an_unknown_encoding_is_a_usage_error(
    make_client: ClientFactory,
) -> None:
    seen: list[httpx.Request] = []
    client = make_client(_capture(seen))
    with pytest.raises(ApiUsageError):
        client.upload_urls([])
    with pytest.raises(ApiUsageError, match="encoding"):
        client.upload_urls(_items(), encoding="json")  # type: ignore[arg-type]
    assert seen == []


@pytest.mark.parametrize(
    "url",
    [
        "ftp://host/a.jpg",
        "file:///etc/passwd",
        "a.jpg",
        "",
        "http://",
        "http:///a.jpg",
        " http://host/a.jpg",
        "http://host/a b.jpg",
        "http://host/a\n.jpg",
        "http://[::1/a.jpg",
        "http://host:port/a.jpg",
    ],
)
def test_an_item_whose_url_is_not_http_with_a_host_is_refused(url: str) -> None:
    with pytest.raises(ValidationError):
        UrlItem(url=url)


def test_an_item_is_frozen_with_empty_metadata_and_indexing_by_default() -> None:
    item = UrlItem(url="HTTPS://Host:8443/x?y=1")
    assert item.metadata == {}
    assert item.index is True
    with pytest.raises(ValidationError):
        item.url = "http://other/"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        UrlItem(url="http://h/a.jpg", metadata={"bad": object()})


# --- against the stand-in ----------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[RunningStandin]:
    with running_standin(max_images_per_request=8) as srv:
        yield srv


@pytest.fixture(scope="module")
def images() -> Iterator[ImageServer]:
    with serve_images() as srv:
        yield srv


@pytest.fixture
def client(server: RunningStandin) -> Iterator[RekaClient]:
    with client_for(server) as made:
        yield made


@pytest.mark.parametrize("encoding", ["form", "multipart"])
def test_images_at_urls_are_uploaded_in_order_and_found_by_get_and_list(
    client: RekaClient, server: RunningStandin, images: ImageServer, encoding: Any
) -> None:
    sources = [
        images.put_image(f"{encoding}/a.jpg", 1),
        images.put_image(f"{encoding}/b.png", 2, fmt="PNG"),
        images.put_image(f"{encoding}/c.jpg", 3),
    ]
    metas: list[dict[str, Any]] = [
        {"camera_id": "cam-1", "recorded_timestamp_utc": 1_700_000_000},
        {"caption": "a truck", "tags": ["x", {"y": 1.5}], "note": None},
        {},
    ]
    items = [
        UrlItem(url=url, metadata=meta, index=i != 2)
        for i, ((url, _), meta) in enumerate(zip(sources, metas, strict=True))
    ]
    result = client.upload_urls(items, encoding=encoding)
    assert result.sent == []
    assert result.request_id
    assert len(result.images) == len(items)

    listed = {image.image_id for image in client.list(limit=100)}
    for image, item, (_, data) in zip(result.images, items, sources, strict=True):
        assert image.image_id in listed
        assert client.get(image.image_id) == image
        assert client.fetch_digest(image.image_url, max_bytes=1 << 20) is not None
        detail = admin(server, "GET", f"images/{image.image_id}")
        assert detail["metadata"] == item.metadata
        assert detail["index"] is item.index
        assert detail["source_url"] == item.url
        assert detail["sha256"] == hashlib.sha256(data).hexdigest()
    assert [image.indexing_status for image in result.images] == [2, 2, 0]


def test_a_bad_url_is_a_validation_error_naming_its_index(
    client: RekaClient, images: ImageServer
) -> None:
    good = [UrlItem(url=images.put_image(f"v/{i}.jpg", 10 + i)[0]) for i in range(3)]
    for bad in (images.url("v/missing.jpg"), closed_port_url()):
        with pytest.raises(ApiValidationError) as caught:
            client.upload_urls([*good[:2], UrlItem(url=bad), good[2]])
        assert caught.value.status == 400
        assert caught.value.param == "image_urls[2]"
        assert not isinstance(caught.value, ApiPayloadTooLarge)


def test_too_many_urls_is_payload_too_large(client: RekaClient, images: ImageServer) -> None:
    url, _ = images.put_image("many.jpg", 20)
    with pytest.raises(ApiPayloadTooLarge) as caught:
        client.upload_urls([UrlItem(url=url)] * 9)
    assert caught.value.param == "image_urls"
    assert len(client.upload_urls([UrlItem(url=url)] * 8).images) == 8


def _split_until_alone(client: RekaClient, items: list[UrlItem]) -> tuple[list[str], list[str]]:
    """Halve on 400/413 as a batch uploader does: (ids uploaded, URLs refused alone)."""
    try:
        return [i.image_id for i in client.upload_urls(items).images], []
    except ApiValidationError:
        if len(items) == 1:
            return [], [items[0].url]
    half = len(items) // 2
    left, right = _split_until_alone(client, items[:half]), _split_until_alone(client, items[half:])
    return left[0] + right[0], left[1] + right[1]


def test_halving_on_the_400_isolates_the_bad_url(client: RekaClient, images: ImageServer) -> None:
    items = [UrlItem(url=images.put_image(f"h/{i}.jpg", 30 + i)[0]) for i in range(7)]
    bad = UrlItem(url=images.put("h/page.html", b"<html></html>", "text/html"))
    uploaded, refused = _split_until_alone(client, [*items[:5], bad, *items[5:]])
    assert refused == [bad.url]
    assert len(uploaded) == len(items)


_KEYS = st.text(min_size=1, max_size=10).filter(lambda k: k not in set(SECURITY_KEYS))
_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=16),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=3),
    max_leaves=6,
)


def test_any_metadata_reaches_the_server_as_sent(
    server: RunningStandin, images: ImageServer, client: RekaClient
) -> None:
    urls = [images.put_image(f"prop/{seed}.jpg", 40 + seed)[0] for seed in range(4)]

    @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        picks=st.lists(
            st.tuples(
                st.sampled_from(urls), st.dictionaries(_KEYS, _VALUES, max_size=4), st.booleans()
            ),
            min_size=1,
            max_size=5,
        ),
        encoding=st.sampled_from(["form", "multipart"]),
    )
    def check(picks: list[tuple[str, dict[str, Any], bool]], encoding: Any) -> None:
        items = [UrlItem(url=url, metadata=meta, index=index) for url, meta, index in picks]
        result = client.upload_urls(items, encoding=encoding)
        assert len(result.images) == len(items)
        for image, item in zip(result.images, items, strict=True):
            detail = admin(server, "GET", f"images/{image.image_id}", http=http)
            assert detail["metadata"] == item.metadata
            assert detail["source_url"] == item.url
            assert detail["index"] is item.index

    with admin_client(server) as http:
        check()

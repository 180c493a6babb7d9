"""The client's requests and the stand-in's responses, checked against Reka's OpenAPI document.

Real HTTP on 127.0.0.1: the client drives all five endpoints through a
`Recorder` transport, and every recorded exchange is validated with
openapi-core.

Where the document and shared/reka-api.md disagree, the page wins (it records
what Reka's own pages say), and the check follows the page:

- Error responses are not in the document at all: an error answer is checked
  against the page's envelope (PageEnvelope below), not with openapi-core.
- Auth: the document declares `X-Api-Key` a required header parameter (and a
  bearer scheme it never requires); the page says either `X-Api-Key` or
  `Authorization: Bearer` works. The client sends `X-Api-Key`, so its
  requests are checked as documented; a Bearer-only request is checked for
  the answer only (test_bearer_auth_is_accepted).
- Upload `metadata`: the document says "a metadata list matching image
  order"; the page gives Reka's worked example, an object
  `{"requests": [...]}`, which the client sends. The document only types the
  part as a string, which it is; its JSON is checked against the page.
- Headers: the document declares no response headers; the page says every
  response carries `X-Request-ID` and the four rate-limit headers. Checked.
- SecurityMetadata: the document makes every key optional; the page says
  search returns all of them, null where empty. Checked, as is `score` in
  0..1 (the document says only "number or null").
- `limit`/`offset`: the document gives no bounds; the page gives 1..100 and
  >= 0. The client refuses bad values itself (tests/client), and the
  stand-in's 400 for them is checked here against the envelope.
- `indexing_status`: the document says integer; the page documents 1 and 2
  and the stand-in adds 0 and 3 (reka_ingest.core.constants.IndexingStatus). Checked.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any, Literal

import httpx
import pytest
from openapi_core import OpenAPI
from pydantic import BaseModel, ConfigDict

from reka_ingest.core import constants as c
from reka_ingest.core.errors import (
    ApiAuthError,
    ApiError,
    ApiNotFound,
    ApiPayloadTooLarge,
    ApiRateLimited,
    ApiValidationError,
)
from reka_ingest.reka.client import RekaClient
from reka_ingest.reka.models import SearchMode, UploadItem
from reka_ingest.standin.runner import RunningStandin
from tests.client.conftest import API_KEY
from tests.client.standin_support import (
    START_TIME,
    jpeg_items,
    running_standin,
    set_faults,
)
from tests.conformance.openapi_support import (
    SHARED_DOCUMENT,
    VENDORED_DOCUMENT,
    Exchange,
    OpenApiRequest,
    OpenApiResponse,
    Recorder,
    load_document,
    openapi_for,
)
from tests.support.clock import Clock

INDEX_DELAY = 5.0
CLIENT_TIMEOUT = httpx.Timeout(connect=5.0, read=30.0, write=30.0, pool=5.0)


class PageError(BaseModel):
    """The `error` object of Reka's errors page, plus the rate-limit page's `code`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal[
        "validation_error",
        "authentication_error",
        "not_found_error",
        "rate_limit_error",
        "server_error",
    ]
    message: str
    param: str | None = None
    details: list[Any] | None = None
    code: Literal["rate_limit_exceeded"] | None = None


class PageEnvelope(BaseModel):
    """`{"error": {...}}`: every error answer, per shared/reka-api.md."""

    model_config = ConfigDict(extra="forbid", strict=True)

    error: PageError


ERROR_TYPE_FOR_STATUS = {
    400: c.ErrorType.VALIDATION,
    401: c.ErrorType.AUTHENTICATION,
    404: c.ErrorType.NOT_FOUND,
    413: c.ErrorType.VALIDATION,
    429: c.ErrorType.RATE_LIMIT,
    500: c.ErrorType.SERVER,
}
PAGE_HEADERS = (
    c.REQUEST_ID_HEADER,
    c.RATELIMIT_LIMIT_HEADER,
    c.RATELIMIT_REMAINING_HEADER,
    c.RATELIMIT_RESET_HEADER,
    c.RETRY_AFTER_HEADER,
)
SECURITY_KEYS = (
    "camera_id",
    "recorded_timestamp_utc",
    "video_clip_id",
    "org_id",
    "site_id",
    "event_id",
    "caption",
    "detection_metadata",
)
OPERATIONS = {
    ("POST", "/v1/images/upload"),
    ("GET", "/v1/images/{image_id}"),
    ("GET", "/v1/images"),
    ("DELETE", "/v1/images/{image_id}"),
    ("POST", "/v1/images/search"),
}


# --- the document itself ---------------------------------------------------------------------


@pytest.mark.skipif(not SHARED_DOCUMENT.is_file(), reason="shared/ is not beside the repo")
def test_vendored_copy_is_the_shared_document() -> None:
    assert VENDORED_DOCUMENT.read_bytes() == SHARED_DOCUMENT.read_bytes()


def test_document_declares_the_five_operations() -> None:
    paths = load_document()["paths"]
    declared = {(method.upper(), path) for path, item in paths.items() for method in item}
    assert declared == OPERATIONS


# --- the harness catches what it should (negative controls) -------------------------------------


OFFLINE_BASE = "http://127.0.0.1:9"


def _request(method: str, path: str, base: str = OFFLINE_BASE, **kwargs: Any) -> httpx.Request:
    request = httpx.Request(method, f"{base}{path}", **kwargs)
    request.read()
    return request


@pytest.fixture(scope="module")
def offline_openapi() -> OpenAPI:
    return openapi_for(OFFLINE_BASE)


def test_harness_refuses_a_bad_search_request(offline_openapi: OpenAPI) -> None:
    bad = _request(
        "POST",
        "/v1/images/search",
        json={"query": "x", "search_mode": "fuzzy"},
        headers={"X-Api-Key": API_KEY},
    )
    assert offline_openapi.unmarshal_request(OpenApiRequest(bad)).errors


def test_harness_refuses_a_request_without_the_key_header(offline_openapi: OpenAPI) -> None:
    assert offline_openapi.unmarshal_request(
        OpenApiRequest(_request("GET", "/v1/images/abc"))
    ).errors


def test_harness_refuses_an_image_without_status(offline_openapi: OpenAPI) -> None:
    request = _request("GET", "/v1/images/abc", headers={"X-Api-Key": API_KEY})
    response = httpx.Response(
        200, json={"image_id": "abc", "image_url": "u", "upload_timestamp": 1}
    )
    result = offline_openapi.unmarshal_response(OpenApiRequest(request), OpenApiResponse(response))
    assert result.errors


# --- the traffic -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock(START_TIME)


@pytest.fixture(scope="module")
def server(clock: Clock) -> Iterator[RunningStandin]:
    with running_standin(
        clock, index_delay=INDEX_DELAY, upload_quota=3, max_images_per_request=4
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def openapi(server: RunningStandin) -> OpenAPI:
    return openapi_for(server.base_url)


@pytest.fixture(scope="module")
def traffic(
    server: RunningStandin, clock: Clock, tmp_path_factory: pytest.TempPathFactory
) -> list[Exchange]:
    """Drive every endpoint, then every error the stand-in gives, through the real client."""
    folder = tmp_path_factory.mktemp("conformance")
    recorder = Recorder()
    items = jpeg_items(folder, 2)
    items[0] = items[0].model_copy(
        update={
            "metadata": {
                "caption": "a red car",
                "camera_id": "cam-1",
                "recorded_timestamp_utc": 1_700_000_000,
                "detection_metadata": [
                    {"class_name": "car", "bounding_box": [1, 2, 3, 4], "confidence": 0.9}
                ],
                "custom_key": {"kept": True},
            }
        }
    )
    items.append(items[1].model_copy(update={"index": False}))
    with RekaClient(
        base_url=server.base_url, api_key=API_KEY, timeout=CLIENT_TIMEOUT, transport=recorder
    ) as client:
        uploaded = client.upload(items)
        first = uploaded.images[0].image_id
        client.get(first)
        clock.advance(INDEX_DELAY)
        client.get(first)
        client.list()
        client.list(limit=2, offset=1)
        client.search("red car")
        client.search(
            "car",
            max_results=3,
            search_mode=SearchMode.JOINED,
            image_weight=0.7,
            text_weight=0.3,
            threshold=0.1,
        )
        client.delete(uploaded.images[2].image_id)

        expect_error(client.get, "no-such-image", error=ApiNotFound)
        expect_error(client.delete, "no-such-image", error=ApiNotFound)
        text = folder / "text.jpg"
        text.write_text("not an image")
        not_image = UploadItem(path=text, filename=text.name, content_type="image/jpeg")
        expect_error(client.upload, [not_image], error=ApiValidationError)
        expect_error(client.upload, [items[1]] * 5, error=ApiPayloadTooLarge)
        expect_error(client.upload, [items[1]], error=ApiRateLimited)  # 4th of a quota of 3
        set_faults(server, fail_share=1.0)
        expect_error(client.list, error=ApiError)
        set_faults(server, fail_share=0.0)
    with RekaClient(
        base_url=server.base_url, api_key="sk-unknown", timeout=CLIENT_TIMEOUT, transport=recorder
    ) as stranger:
        expect_error(stranger.list, error=ApiAuthError)
    return recorder.exchanges


def expect_error(call: Any, *args: Any, error: type[ApiError]) -> None:
    with pytest.raises(error):
        call(*args)


def operation_of(exchange: Exchange) -> tuple[str, str]:
    method, path = exchange.request.method, exchange.request.url.path
    if path.startswith("/v1/images/") and path.rsplit("/", 1)[1] not in ("upload", "search"):
        path = "/v1/images/{image_id}"
    return method, path


def explain(errors: Iterable[Exception]) -> list[str]:
    """openapi-core's errors say little by themselves; the detail is in their causes."""
    out = []
    for error in errors:
        cause = error.__cause__
        details = getattr(cause, "schema_errors", None) or ([cause] if cause else [])
        out.append(f"{error!r}: " + "; ".join(str(d).splitlines()[0] for d in details))
    return out


def successes(traffic: list[Exchange]) -> list[Exchange]:
    return [exchange for exchange in traffic if exchange.response.is_success]


def failures(traffic: list[Exchange]) -> list[Exchange]:
    return [exchange for exchange in traffic if not exchange.response.is_success]


def test_traffic_covers_every_operation_and_error(traffic: list[Exchange]) -> None:
    assert {operation_of(exchange) for exchange in successes(traffic)} == OPERATIONS
    statuses = {exchange.response.status_code for exchange in failures(traffic)}
    assert statuses == {400, 401, 404, 413, 429, 500}


def test_every_request_matches_the_document(openapi: OpenAPI, traffic: list[Exchange]) -> None:
    """Error answers included: a request is valid or not whatever came back."""
    for exchange in traffic:
        result = openapi.unmarshal_request(OpenApiRequest(exchange.request))
        assert not result.errors, (operation_of(exchange), explain(result.errors))


def test_every_success_matches_the_document(openapi: OpenAPI, traffic: list[Exchange]) -> None:
    for exchange in successes(traffic):
        result = openapi.unmarshal_response(
            OpenApiRequest(exchange.request), OpenApiResponse(exchange.response)
        )
        assert not result.errors, (operation_of(exchange), explain(result.errors))
        assert exchange.response.headers["content-type"].startswith("application/json")


def test_every_error_matches_the_page_envelope(traffic: list[Exchange]) -> None:
    for exchange in failures(traffic):
        error = PageEnvelope.model_validate_json(exchange.response.content).error
        status = exchange.response.status_code
        assert error.type == ERROR_TYPE_FOR_STATUS[status], error
        if status == 429:
            assert error.code == c.RATE_LIMIT_CODE  # the rate-limit page's shape
        if status in (400, 413) and operation_of(exchange)[1].endswith("/upload"):
            assert error.param, error


def test_every_response_has_the_page_headers(traffic: list[Exchange]) -> None:
    for exchange in traffic:
        for header in PAGE_HEADERS:
            assert header in exchange.response.headers, (operation_of(exchange), header)


def test_upload_request_follows_the_page(openapi: OpenAPI, traffic: list[Exchange]) -> None:
    """One `images` part per file, and `metadata` as Reka's worked example, same order."""
    first = next(e for e in traffic if operation_of(e) == ("POST", "/v1/images/upload"))
    body = openapi.unmarshal_request(OpenApiRequest(first.request)).body
    assert isinstance(body, dict)
    assert len(body["images"]) == 3
    metadata = json.loads(body["metadata"])
    assert [entry["indexing_config"]["index"] for entry in metadata["requests"]] == [
        True,
        True,
        False,
    ]
    assert metadata["requests"][0]["metadata"]["caption"] == "a red car"
    assert "image_urls" not in body


def test_search_results_follow_the_page(traffic: list[Exchange]) -> None:
    searches = [e for e in successes(traffic) if operation_of(e) == ("POST", "/v1/images/search")]
    hits = [hit for e in searches for hit in e.response.json()["results"]]
    assert hits, "the searches found nothing, so nothing was checked"
    for hit in hits:
        assert set(SECURITY_KEYS) <= set(hit["image_metadata"])
        assert hit["score"] is None or 0 <= hit["score"] <= 1


def test_indexing_status_values_are_known(traffic: list[Exchange]) -> None:
    known = {int(status) for status in c.IndexingStatus}
    seen = set()
    for exchange in successes(traffic):
        body = exchange.response.json()
        images = body.get("results", [body]) if isinstance(body, dict) else []
        seen |= {image["indexing_status"] for image in images if "indexing_status" in image}
    assert seen <= known
    assert {c.IndexingStatus.IN_PROGRESS, c.IndexingStatus.INDEXED} <= seen


def test_bearer_auth_is_accepted(server: RunningStandin, openapi: OpenAPI) -> None:
    """The page's other auth header. Only the answer is checked: the document would
    refuse the request for lacking its required X-Api-Key parameter, and the page wins."""
    response = httpx.get(
        f"{server.base_url}/v1/images",
        params={"limit": 1},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=CLIENT_TIMEOUT,
    )
    assert response.status_code == 200
    # The same request with the documented header, to find the operation the answer is for.
    request = _request("GET", "/v1/images?limit=1", server.base_url, headers={"X-Api-Key": API_KEY})
    result = openapi.unmarshal_response(OpenApiRequest(request), OpenApiResponse(response))
    assert not result.errors

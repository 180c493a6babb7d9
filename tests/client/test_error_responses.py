"""Error answers -> our classes: status, envelope fallbacks, param, request id, rate limits."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from reka_ingest.core.errors import (
    ApiAuthError,
    ApiClientError,
    ApiError,
    ApiNotFound,
    ApiPayloadTooLarge,
    ApiProtocolError,
    ApiRateLimited,
    ApiServerError,
    ApiValidationError,
    RateLimitInfo,
)
from reka_ingest.reka.errors import RAW_TEXT_LIMIT, error_from_response, parse_rate_limit
from tests.client.conftest import API_KEY, ClientFactory


def answer(status: int, body: Any = None, *, text: str | None = None, **headers: str) -> Any:
    """A handler answering every request with `status` and a JSON body (or raw text)."""

    def handler(request: httpx.Request) -> httpx.Response:
        hdrs = {"X-Request-ID": "req-42", **{k.replace("_", "-"): v for k, v in headers.items()}}
        if text is not None:
            return httpx.Response(status, text=text, headers=hdrs)
        return httpx.Response(status, json=body, headers=hdrs)

    return handler


def raised(make_client: ClientFactory, handler: Any) -> ApiError:
    client = make_client(handler)
    with pytest.raises(ApiError) as caught:
        client.get("abc")
    return caught.value


@pytest.mark.parametrize(
    ("status", "cls", "retryable"),
    [
        (400, ApiValidationError, False),
        (401, ApiAuthError, False),
        (403, ApiClientError, False),
        (404, ApiNotFound, False),
        (409, ApiClientError, False),
        (413, ApiPayloadTooLarge, False),
        (422, ApiValidationError, False),
        (429, ApiRateLimited, True),
        (500, ApiServerError, True),
        (502, ApiServerError, True),
        (503, ApiServerError, True),
        (504, ApiServerError, True),
        (302, ApiProtocolError, False),
    ],
)
def test_status_maps_to_class(
    make_client: ClientFactory, status: int, cls: type[ApiError], retryable: bool
) -> None:
    error = raised(make_client, answer(status, {"error": {"type": "x", "message": "m"}}))
    assert type(error) is cls
    assert error.status == status
    assert error.retryable is retryable
    assert error.request_id == "req-42"


def test_envelope_type_and_message(make_client: ClientFactory) -> None:
    body = {"error": {"type": "validation_error", "message": "not an image", "param": "images"}}
    error = raised(make_client, answer(400, body))
    assert error.error_type == "validation_error"
    assert error.message == "validation_error: not an image"
    assert error.param == "images"
    assert str(error) == (
        "validation_error: not an image status=400 type=validation_error param=images"
        " request_id=req-42"
    )


def test_type_wins_over_code(make_client: ClientFactory) -> None:
    body = {"error": {"type": "rate_limit_error", "code": "rate_limit_exceeded", "message": "m"}}
    assert raised(make_client, answer(429, body)).error_type == "rate_limit_error"


def test_code_when_no_type(make_client: ClientFactory) -> None:
    body = {"error": {"code": "rate_limit_exceeded", "message": "slow down"}}
    error = raised(make_client, answer(429, body))
    assert error.error_type == "rate_limit_exceeded"
    assert error.message == "rate_limit_exceeded: slow down"


def test_raw_text_when_not_json(make_client: ClientFactory) -> None:
    error = raised(make_client, answer(502, text="<html>Bad Gateway</html>"))
    assert error.error_type is None
    assert error.message == "<html>Bad Gateway</html>"


def test_raw_text_when_json_without_envelope(make_client: ClientFactory) -> None:
    error = raised(make_client, answer(500, ["unexpected"]))
    assert error.message == '["unexpected"]'


def test_raw_text_is_truncated(make_client: ClientFactory) -> None:
    error = raised(make_client, answer(500, text="x" * 10_000))
    assert len(error.message) == RAW_TEXT_LIMIT
    assert error.message.endswith("…")


def test_empty_body_gives_the_status_line(make_client: ClientFactory) -> None:
    error = raised(make_client, answer(503, text=""))
    assert error.message == "HTTP 503 Service Unavailable"


def test_details_kept(make_client: ClientFactory) -> None:
    details = [{"loc": ["metadata"], "msg": "bad"}]
    body = {"error": {"type": "validation_error", "message": "m", "details": details}}
    assert raised(make_client, answer(400, body)).details == details


def test_fastapi_detail_list(make_client: ClientFactory) -> None:
    detail = [{"loc": ["body", "query"], "msg": "field required", "type": "missing"}]
    error = raised(make_client, answer(422, {"detail": detail}))
    assert isinstance(error, ApiValidationError)
    assert error.details == detail


def test_no_request_id_header(make_client: ClientFactory) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, json={"error": {"type": "server_error", "message": "m"}})

    assert raised(make_client, handler).request_id is None


def test_an_echoed_key_is_scrubbed(make_client: ClientFactory) -> None:
    body = {"error": {"type": "authentication_error", "message": f"unknown key {API_KEY}"}}
    error = raised(make_client, answer(401, body))
    assert API_KEY not in str(error)
    assert "unknown key ***" in error.message


def test_rate_limited_carries_headers_and_retry_after(make_client: ClientFactory) -> None:
    handler = answer(
        429,
        {"error": {"type": "rate_limit_error", "code": "rate_limit_exceeded", "message": "m"}},
        x_ratelimit_requests_limit="100",
        x_ratelimit_requests_remaining="0",
        x_ratelimit_requests_reset="3600",
        retry_after="17",
    )
    error = raised(make_client, handler)
    assert isinstance(error, ApiRateLimited)
    assert error.rate_limit == RateLimitInfo(
        limit=100, remaining=0, reset_seconds=3600.0, retry_after_seconds=17.0
    )
    assert error.retry_after == 17.0


def test_rate_limited_without_retry_after_uses_reset(make_client: ClientFactory) -> None:
    handler = answer(
        429,
        {"error": {"type": "rate_limit_error"}},
        x_ratelimit_requests_remaining="0",
        x_ratelimit_requests_reset="250",
    )
    error = raised(make_client, handler)
    assert isinstance(error, ApiRateLimited)
    assert error.retry_after == 250.0


# --- parse_rate_limit on its own -----------------------------------------------------


def test_parse_all_headers() -> None:
    headers = httpx.Headers(
        {
            "X-RateLimit-Requests-Limit": "100",
            "X-RateLimit-Requests-Remaining": "42",
            "X-RateLimit-Requests-Reset": "86399.5",
            "Retry-After": "0",
        }
    )
    assert parse_rate_limit(headers) == RateLimitInfo(
        limit=100, remaining=42, reset_seconds=86399.5, retry_after_seconds=0.0
    )


def test_parse_absent_headers() -> None:
    assert parse_rate_limit(httpx.Headers()) == RateLimitInfo()


@pytest.mark.parametrize("garbled", ["", "abc", "-1", "nan", "inf", "1e999", "12 seconds"])
def test_parse_garbled_headers(garbled: str) -> None:
    headers = httpx.Headers(
        {
            "x-ratelimit-requests-limit": garbled,
            "x-ratelimit-requests-remaining": garbled,
            "x-ratelimit-requests-reset": garbled,
            "retry-after": garbled,
        }
    )
    assert parse_rate_limit(headers) == RateLimitInfo()


def test_parse_one_garbled_header_keeps_the_others() -> None:
    headers = {"x-ratelimit-requests-limit": "100", "x-ratelimit-requests-remaining": "many"}
    assert parse_rate_limit(headers) == RateLimitInfo(limit=100)


def test_retry_after_as_http_date() -> None:
    future = parse_rate_limit({"retry-after": "Fri, 01 Jan 2100 00:00:00 GMT"})
    past = parse_rate_limit({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert future.retry_after_seconds is not None
    assert future.retry_after_seconds > 0
    assert past.retry_after_seconds == 0.0


def test_error_from_response_directly() -> None:
    response = httpx.Response(
        413,
        json={"error": {"type": "validation_error", "message": "too big", "param": "images[3]"}},
        headers={"X-Request-ID": "r-9", "retry-after": "0"},
    )
    error = error_from_response(response)
    assert isinstance(error, ApiPayloadTooLarge)
    assert isinstance(error, ApiValidationError)
    assert error.param == "images[3]"
    assert error.request_id == "r-9"
    assert error.rate_limit.retry_after_seconds == 0.0


def test_unread_streamed_response_does_not_raise() -> None:
    """A streamed response inside an HTTPStatusError has no body to read: status decides."""
    response = httpx.Response(
        503, stream=httpx.ByteStream(b"never read"), headers={"X-Request-ID": "r-1"}
    )
    error = error_from_response(response)
    assert isinstance(error, ApiServerError)
    assert error.message == "HTTP 503 Service Unavailable"
    assert error.request_id == "r-1"


def test_non_utf8_error_body() -> None:
    response = httpx.Response(
        500, content=b"caf\xe9 down", headers={"content-type": "text/plain; charset=latin-1"}
    )
    assert error_from_response(response).message == "café down"

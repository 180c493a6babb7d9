"""Every exception httpx exports becomes one of ours, with the right retry split.

The classes are discovered (httpx.__all__ plus a subclass walk of the roots),
so a class a new httpx release adds is tested without touching this file: it
is expected to map like its nearest ancestor in EXPECTED.
"""

from __future__ import annotations

import inspect
import pickle
from typing import Any

import httpx
import pytest

from reka_ingest.core.errors import (
    ApiConnectionError,
    ApiError,
    ApiProtocolError,
    ApiServerError,
    ApiTimeout,
    ApiTransportError,
    ApiUsageError,
    IngestError,
    PermanentError,
    RetryableError,
)
from reka_ingest.reka.errors import call_translated, translate_transport_error, translating
from tests.client.conftest import API_KEY, ClientFactory

ROOTS: tuple[type[Exception], ...] = (
    httpx.HTTPError,
    httpx.InvalidURL,
    httpx.CookieConflict,
    httpx.StreamError,
)

# The contract, written out once more on purpose: the mapping in reka_ingest.reka.errors
# must agree with it. HTTPStatusError maps by its response (a 503 here).
EXPECTED: dict[type[Exception], type[ApiError]] = {
    httpx.HTTPError: ApiTransportError,
    httpx.RequestError: ApiTransportError,
    httpx.TransportError: ApiTransportError,
    httpx.TimeoutException: ApiTimeout,
    httpx.ConnectTimeout: ApiTimeout,
    httpx.ReadTimeout: ApiTimeout,
    httpx.WriteTimeout: ApiTimeout,
    httpx.PoolTimeout: ApiTimeout,
    httpx.NetworkError: ApiConnectionError,
    httpx.ConnectError: ApiConnectionError,
    httpx.ReadError: ApiConnectionError,
    httpx.WriteError: ApiConnectionError,
    httpx.CloseError: ApiConnectionError,
    httpx.ProtocolError: ApiConnectionError,
    httpx.RemoteProtocolError: ApiConnectionError,
    httpx.ProxyError: ApiConnectionError,
    httpx.LocalProtocolError: ApiUsageError,
    httpx.UnsupportedProtocol: ApiUsageError,
    httpx.DecodingError: ApiProtocolError,
    httpx.TooManyRedirects: ApiProtocolError,
    httpx.HTTPStatusError: ApiServerError,
    httpx.InvalidURL: ApiUsageError,
    httpx.CookieConflict: ApiUsageError,
    httpx.StreamError: ApiUsageError,
    httpx.StreamConsumed: ApiUsageError,
    httpx.StreamClosed: ApiUsageError,
    httpx.ResponseNotRead: ApiUsageError,
    httpx.RequestNotRead: ApiUsageError,
}


def discover() -> list[type[Exception]]:
    """Every exception class httpx defines under ROOTS or exports by name."""
    found: set[type[Exception]] = set()
    for name in httpx.__all__:
        obj = getattr(httpx, name)
        if inspect.isclass(obj) and issubclass(obj, Exception):
            found.add(obj)
    stack: list[type[Exception]] = list(ROOTS)
    while stack:
        cls = stack.pop()
        if cls.__module__.split(".")[0] == "httpx":
            found.add(cls)
        stack.extend(cls.__subclasses__())
    return sorted(found, key=lambda cls: cls.__name__)


ALL = discover()


def expected_for(cls: type[Exception]) -> type[ApiError]:
    """The class in EXPECTED, or that of the nearest ancestor for a class httpx added."""
    for klass in cls.__mro__:
        if klass in EXPECTED:
            return EXPECTED[klass]
    raise AssertionError(f"{cls.__name__} derives from none of the known httpx classes")


def leaky_request() -> httpx.Request:
    """A request carrying the key in a header, as every request of the client does."""
    return httpx.Request("GET", "http://127.0.0.1:9/v1/images/abc", headers={"X-Api-Key": API_KEY})


def build(cls: type[Exception], request: httpx.Request | None = None) -> Exception:
    """An instance of `cls`, its message leaking the key, tied to a request holding it."""
    request = request or leaky_request()
    message = f"something failed near {API_KEY}"
    params = inspect.signature(cls.__init__).parameters
    kwargs: dict[str, Any] = {}
    if "request" in params:
        kwargs["request"] = request
    if "response" in params:
        body = {"error": {"type": "server_error", "message": f"echo {API_KEY}"}}
        kwargs["response"] = httpx.Response(
            503, json=body, headers={"X-Request-ID": "req-503"}, request=request
        )
    if "message" in params:
        return cls(message, **kwargs)
    return cls(**kwargs)


def test_discovery_finds_every_known_class() -> None:
    """Guards the walk itself: if it finds less than we know of, it is broken."""
    assert set(EXPECTED) <= set(ALL)


def test_every_discovered_class_has_an_expectation() -> None:
    for cls in ALL:
        assert issubclass(expected_for(cls), IngestError)


@pytest.mark.parametrize("cls", ALL, ids=lambda cls: cls.__name__)
def test_translation_class_and_split(cls: type[Exception]) -> None:
    error = translate_transport_error(build(cls), request_id="req-1")
    want = expected_for(cls)
    assert isinstance(error, IngestError)
    assert type(error) is want
    assert error.retryable is issubclass(want, RetryableError)
    assert isinstance(error, RetryableError) != isinstance(error, PermanentError)


NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@pytest.mark.parametrize("cls", ALL, ids=lambda cls: cls.__name__)
def test_a_transport_error_says_whether_the_request_may_have_arrived(
    cls: type[Exception],
) -> None:
    """Only a connection never made proves nothing was sent; everything else without
    an answer (read timeout, a connection dropped) may have been stored. It
    survives pickling, as Celery would carry it."""
    error = translate_transport_error(build(cls))
    if not isinstance(error, ApiTransportError):
        return
    rebuilt = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own object
    assert error.maybe_sent is rebuilt.maybe_sent is (not issubclass(cls, NOT_SENT))


@pytest.mark.parametrize("cls", ALL, ids=lambda cls: cls.__name__)
def test_translation_never_shows_the_key(cls: type[Exception]) -> None:
    error = translate_transport_error(build(cls), secrets=[API_KEY])
    rebuilt = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own object, as Celery would
    for text in (str(error), repr(error), str(rebuilt), repr(rebuilt), repr(error.__dict__)):
        assert API_KEY not in text
    assert type(rebuilt) is type(error)


@pytest.mark.parametrize("cls", ALL, ids=lambda cls: cls.__name__)
def test_call_translated_drops_the_foreign_exception(cls: type[Exception]) -> None:
    """Neither cause nor context: the httpx exception holds a request with the key."""
    original = build(cls)

    def fail() -> None:
        raise original

    with pytest.raises(ApiError) as caught:
        call_translated(fail, secrets=[API_KEY])
    assert type(caught.value) is expected_for(cls)
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None


@pytest.mark.parametrize("cls", ALL, ids=lambda cls: cls.__name__)
def test_nothing_httpx_escapes_the_client(cls: type[Exception], make_client: ClientFactory) -> None:
    """The same, end to end: the transport raises, the client's caller sees only ours."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise build(cls, request)

    client = make_client(handler)
    with pytest.raises(IngestError) as caught:
        client.get("abc")
    assert type(caught.value) is expected_for(cls)
    assert API_KEY not in str(caught.value)
    assert API_KEY not in repr(caught.value)


def test_message_names_the_class_and_request_line() -> None:
    error = translate_transport_error(httpx.ReadTimeout("timed out", request=leaky_request()))
    assert str(error).startswith("ReadTimeout: timed out (GET http://127.0.0.1:9/v1/images/abc)")


def test_url_user_info_is_not_shown() -> None:
    request = httpx.Request("GET", "http://user:hunter2@127.0.0.1:9/v1/images")
    error = translate_transport_error(httpx.ConnectError("refused", request=request))
    assert "hunter2" not in str(error)
    assert "127.0.0.1:9/v1/images" in str(error)


def test_an_exception_without_request_still_translates() -> None:
    """httpx raises RuntimeError from `.request` when none was attached."""
    error = translate_transport_error(httpx.ConnectError("refused"))
    assert isinstance(error, ApiConnectionError)
    assert str(error) == "ConnectError: refused"


def test_status_error_goes_through_the_response() -> None:
    request = leaky_request()
    response = httpx.Response(404, json={"error": {"type": "not_found_error"}}, request=request)
    exc = httpx.HTTPStatusError("not found", request=request, response=response)
    error = translate_transport_error(exc)
    assert error.status == 404
    assert error.error_type == "not_found_error"
    assert not error.retryable


def test_translating_block() -> None:
    """The context-manager door: same mapping, the foreign exception kept out of tracebacks."""
    with pytest.raises(ApiTimeout) as caught, translating(request_id="req-7", secrets=[API_KEY]):
        raise httpx.PoolTimeout(f"no connection for {API_KEY}", request=leaky_request())
    assert caught.value.request_id == "req-7"
    assert caught.value.__suppress_context__
    assert caught.value.__cause__ is None
    assert API_KEY not in str(caught.value)


def test_translating_leaves_our_own_errors_alone() -> None:
    original = ApiUsageError("ours")
    with pytest.raises(ApiUsageError) as caught, translating():
        raise original
    assert caught.value is original

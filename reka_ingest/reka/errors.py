"""The one place where foreign errors (httpx, error responses) become ours.

Three doors, all used by `reka_ingest.reka.client`:

- `error_from_response(response)`: a non-2xx answer -> the `ApiError` subclass
  for its status, with the envelope's type/message/param/details, the
  `X-Request-ID` and the rate-limit headers.
- `translate_transport_error(exc)`: any httpx exception -> an `ApiError`.
- `call_translated(fn)` (and `translating()`, its context-manager twin):
  run httpx code so that no httpx exception ever leaves it.

Secrets: an httpx exception can carry its request, and so the `X-Api-Key`
header. We never render a request's headers; we build our message from the
exception's own text and the URL (without user info), scrub every secret the
caller names from it, and (in `call_translated`) raise ours outside the
`except` block so the foreign exception, and the request it holds, is neither
its cause nor its context.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import httpx

from reka_ingest.core import constants as c
from reka_ingest.core.errors import (
    ApiAuthError,
    ApiClientError,
    ApiConnectionError,
    ApiError,
    ApiNotFound,
    ApiPayloadTooLarge,
    ApiProtocolError,
    ApiRateLimited,
    ApiServerError,
    ApiTimeout,
    ApiTransportError,
    ApiUsageError,
    ApiValidationError,
    RateLimitInfo,
)

T = TypeVar("T")

# How much of a non-JSON error body goes into a message.
RAW_TEXT_LIMIT = 300
REDACTED = "***"

# Every httpx exception that does not derive from httpx.HTTPError.
FOREIGN_NON_HTTP_ERRORS: tuple[type[Exception], ...] = (
    httpx.InvalidURL,
    httpx.CookieConflict,
    httpx.StreamError,
)
CAUGHT: tuple[type[Exception], ...] = (httpx.HTTPError, *FOREIGN_NON_HTTP_ERRORS)

_STATUS_CLASSES: dict[int, type[ApiError]] = {
    400: ApiValidationError,
    401: ApiAuthError,
    404: ApiNotFound,
    413: ApiPayloadTooLarge,
    # Not in Reka's pages; FastAPI (which the real service appears to be) answers
    # 422 for a request that fails its schema. Still an ApiClientError.
    422: ApiValidationError,
    429: ApiRateLimited,
}

# No connection was made, so no byte of the request reached the server.
NOT_SENT: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)

# Looked up along an exception's MRO: its nearest mapped ancestor decides.
_TRANSPORT_CLASSES: dict[type[Exception], type[ApiError]] = {
    httpx.TimeoutException: ApiTimeout,
    # The server closed the connection without (a whole) answer: a dropped connection.
    httpx.RemoteProtocolError: ApiConnectionError,
    # We broke HTTP ourselves (bad header, body longer than declared): a bug, not a fault.
    httpx.LocalProtocolError: ApiUsageError,
    httpx.ProtocolError: ApiConnectionError,
    httpx.NetworkError: ApiConnectionError,
    httpx.ProxyError: ApiConnectionError,
    httpx.UnsupportedProtocol: ApiUsageError,
    httpx.TransportError: ApiTransportError,
    httpx.DecodingError: ApiProtocolError,
    httpx.TooManyRedirects: ApiProtocolError,
    httpx.RequestError: ApiTransportError,
    httpx.HTTPError: ApiTransportError,
    httpx.InvalidURL: ApiUsageError,
    httpx.CookieConflict: ApiUsageError,
    httpx.StreamError: ApiUsageError,
}


# --- rate-limit headers -----------------------------------------------------------


def _header_number(headers: Mapping[str, str], name: str) -> float | None:
    """A header as a finite, non-negative number; None when absent or garbled."""
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return value


def _header_int(headers: Mapping[str, str], name: str) -> int | None:
    value = _header_number(headers, name)
    return None if value is None else int(value)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """`retry-after` in seconds: a number, or an HTTP date (RFC 9110) turned into seconds."""
    seconds = _header_number(headers, c.RETRY_AFTER_HEADER)
    if seconds is not None:
        return seconds
    raw = headers.get(c.RETRY_AFTER_HEADER)
    if not raw:
        return None
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # RFC dates are GMT; a naive one cannot be compared
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def parse_rate_limit(headers: Mapping[str, str]) -> RateLimitInfo:
    """The rate-limit headers of a response; a field is None when absent or garbled.

    `headers` is an `httpx.Headers` (case-insensitive) or any mapping with the
    lower-case names.
    """
    return RateLimitInfo(
        limit=_header_int(headers, c.RATELIMIT_LIMIT_HEADER),
        remaining=_header_int(headers, c.RATELIMIT_REMAINING_HEADER),
        reset_seconds=_header_number(headers, c.RATELIMIT_RESET_HEADER),
        retry_after_seconds=_retry_after(headers),
    )


# --- error responses --------------------------------------------------------------


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every non-empty secret replaced by `***`."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def _truncate(text: str, limit: int = RAW_TEXT_LIMIT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def class_for_status(status: int) -> type[ApiError]:
    """The ApiError subclass for a non-2xx HTTP status."""
    if status in _STATUS_CLASSES:
        return _STATUS_CLASSES[status]
    if status >= 500:
        return ApiServerError
    if status >= 400:
        return ApiClientError
    # 1xx/3xx reaching us: we do not follow redirects, so this is not an answer we can read.
    return ApiProtocolError


def _body(response: httpx.Response) -> bytes:
    """The body, or nothing when it was never read (a streamed response in an HTTPStatusError)."""
    try:
        return response.content
    except httpx.ResponseNotRead:
        return b""


def _envelope(content: bytes) -> dict[str, Any] | None:
    """The `error` object of Reka's envelope, or a FastAPI `detail` shaped like one."""
    try:
        body = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    if isinstance(error, dict):
        return error
    detail = body.get("detail")
    if isinstance(detail, str):
        return {"message": detail}
    if isinstance(detail, list):
        return {"message": "request failed validation", "details": detail}
    return None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def error_from_response(response: httpx.Response, *, secrets: Iterable[str] = ()) -> ApiError:
    """The ApiError for a non-2xx response (an unread body counts as empty).

    The error's kind is the envelope's `type`, else its `code` (Reka's rate-limit
    page), else none; the message is the envelope's `message`, else the raw body
    (truncated), else the status line.
    """
    secrets = tuple(secrets)
    status = response.status_code
    cls = class_for_status(status)
    content = _body(response)
    envelope = _envelope(content) or {}
    kind = _str_or_none(envelope.get("type")) or _str_or_none(envelope.get("code"))
    text = _str_or_none(envelope.get("message"))
    if text is None and not envelope:
        text = _truncate(content.decode(response.encoding or "utf-8", errors="replace")) or None
    parts = [p for p in (kind, text) if p]
    message = ": ".join(parts) if parts else f"HTTP {status} {response.reason_phrase}".strip()
    details = envelope.get("details")
    param = envelope.get("param")
    return cls(
        scrub(_truncate(message), secrets),
        status=status,
        request_id=response.headers.get(c.REQUEST_ID_HEADER),
        error_type=kind,
        param=scrub(str(param), secrets) if param is not None else None,
        details=details if isinstance(details, list) else None,
        rate_limit=parse_rate_limit(response.headers),
    )


# --- transport errors -------------------------------------------------------------


def safe_url(url: httpx.URL) -> str:
    """The URL without user info (which may hold a password)."""
    port = f":{url.port}" if url.port is not None else ""
    path = url.raw_path.decode("ascii", errors="replace")
    return f"{url.scheme}://{url.host}{port}{path}"


def _where(exc: Exception) -> str:
    """`METHOD url` of the request an httpx exception is about, or "" when it has none."""
    if not isinstance(exc, httpx.RequestError | httpx.HTTPStatusError):
        return ""
    try:
        request = exc.request
    except RuntimeError:  # httpx raises this when the exception was built without a request
        return ""
    return f" ({request.method} {safe_url(request.url)})"


def class_for_exception(exc: Exception) -> type[ApiError]:
    """The ApiError subclass for an httpx exception, by its nearest mapped ancestor."""
    for klass in type(exc).__mro__:
        if klass in _TRANSPORT_CLASSES:
            return _TRANSPORT_CLASSES[klass]
    return ApiTransportError


def translate_transport_error(
    exc: Exception, request_id: str | None = None, *, secrets: Iterable[str] = ()
) -> ApiError:
    """Any httpx exception as one of ours.

    `HTTPStatusError` goes through `error_from_response`; everything else is
    mapped by class (see `_TRANSPORT_CLASSES`). The message names the httpx
    class, its text and the request line, never its headers.
    """
    secrets = tuple(secrets)
    if isinstance(exc, httpx.HTTPStatusError):
        return error_from_response(exc.response, secrets=secrets)
    cls = class_for_exception(exc)
    text = str(exc) or "no detail"
    message = scrub(f"{type(exc).__name__}: {_truncate(text)}{_where(exc)}", secrets)
    error = cls(message, request_id=request_id)
    if isinstance(error, ApiTransportError) and isinstance(exc, NOT_SENT):
        error.maybe_sent = False
    return error


def call_translated(
    fn: Callable[[], T], *, request_id: str | None = None, secrets: Iterable[str] = ()
) -> T:
    """`fn()`, with any httpx exception it raises turned into an ApiError.

    Ours is raised after the `except` block has let go of the foreign
    exception, so it is neither our cause nor our context: it holds the
    request, and with it the API key. The client sends every request this way.
    """
    try:
        return fn()
    except CAUGHT as exc:
        error = translate_transport_error(exc, request_id, secrets=secrets)
    raise error


@contextmanager
def translating(*, request_id: str | None = None, secrets: Iterable[str] = ()) -> Iterator[None]:
    """The same for a block: any httpx exception leaves it as an ApiError.

    A context manager runs while the foreign exception is being handled, so
    Python records it as our `__context__`; `from None` keeps it out of
    tracebacks, but it stays reachable. Prefer `call_translated` for requests.
    """
    try:
        yield
    except CAUGHT as exc:
        raise translate_transport_error(exc, request_id, secrets=secrets) from None

"""`RekaClient`: the five image endpoints of the Reka Vision API over one httpx.Client
(uploads of files, and of image URLs the server fetches), and the bytes behind an
image's `image_url` (fetched without the API key).

A client owns a connection pool with explicit timeouts and limits (from
`RekaSettings`); it is not fork-safe, so whoever holds one makes it in the
process that uses it (a worker's runtime does, in each pool child). An
optional observer hears of every response (method, path, status): the worker
wires it to its metrics counters; this module knows nothing of them.

Every method either returns the documented shape or raises an `ApiError`
carrying the response's `X-Request-ID`; no httpx or JSON exception leaves this
module (see `reka_ingest.reka.errors`). Success is not logged at INFO: the caller's
canonical line does that.
"""

from __future__ import annotations

import builtins
import dataclasses
import hashlib
import io
import json
import os
from collections.abc import Callable, Generator, Sequence
from contextlib import ExitStack
from types import TracebackType
from typing import Any, BinaryIO, Literal, TypeVar
from urllib.parse import quote

import httpx
from pydantic import SecretStr, ValidationError

from reka_ingest.core import constants as c
from reka_ingest.core.errors import ApiProtocolError, ApiUsageError, SettingsError
from reka_ingest.core.logs import get_logger
from reka_ingest.core.settings import RekaSettings
from reka_ingest.reka.errors import call_translated, error_from_response, parse_rate_limit, safe_url
from reka_ingest.reka.models import (
    ApiModel,
    ContentDigest,
    DeleteResult,
    Image,
    ImageList,
    SearchMode,
    SearchResult,
    SearchResultList,
    SentBytes,
    UploadItem,
    UploadResult,
    UrlItem,
)
from reka_ingest.reka.multipart import UploadBody

__all__ = [
    "HashingReader",
    "RekaClient",
    "ResponseObserver",
    "UploadResult",
]

log = get_logger(__name__)

M = TypeVar("M", bound=ApiModel)
TimeoutArg = httpx.Timeout | float | None
# Told of each answer the API gave: (method, path, status). It must not raise;
# if it does, the error is logged and the call goes on.
ResponseObserver = Callable[[str, str, int], None]

USER_AGENT = "reka-ingest"


class _ApiKeyAuth(httpx.Auth):
    """Adds `X-Api-Key` to each request, so the key is not in the client's default headers."""

    def __init__(self, key: SecretStr) -> None:
        self._key = key

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers[c.API_KEY_HEADER] = self._key.get_secret_value()
        yield request

    def __repr__(self) -> str:
        return "_ApiKeyAuth(key=***)"


def _default_timeout() -> httpx.Timeout:
    return httpx.Timeout(
        connect=c.DEFAULT_CONNECT_TIMEOUT,
        read=c.DEFAULT_READ_TIMEOUT,
        write=c.DEFAULT_WRITE_TIMEOUT,
        pool=c.DEFAULT_POOL_TIMEOUT,
    )


def _default_limits() -> httpx.Limits:
    return httpx.Limits(
        max_connections=c.DEFAULT_MAX_CONNECTIONS,
        max_keepalive_connections=c.DEFAULT_MAX_KEEPALIVE,
    )


def _check_key(api_key: str | SecretStr) -> SecretStr:
    secret = api_key if isinstance(api_key, SecretStr) else SecretStr(api_key)
    value = secret.get_secret_value()
    # A header value must be visible ASCII; httpx would fail later with the key in its error.
    if (
        not value
        or not value.isascii()
        or not value.isprintable()
        or any(ch.isspace() for ch in value)
    ):
        raise ApiUsageError("the API key must be non-empty printable ASCII without spaces")
    return secret


class HashingReader:
    """An open file as an upload's body reads it into its part, hashing what it hands out.

    The upload body (`reka_ingest.reka.multipart`) reads a part as httpx 0.28's
    own encoder does (`httpx/_multipart.py` FileField), only in larger reads: the
    length from `fileno()` and fstat when the request is built (so the body
    keeps its Content-Length), `seek(0)` before the part is rendered (again if
    it is rendered again), then `read(64 KiB)` until b"". So the digest starts
    over at a seek to 0, and once the request is sent `sent` is the sha256 and
    length of exactly the bytes it carried, even if the file changed since it
    was claimed and hashed. Any other seek would break that, so it is refused.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._digest = hashlib.sha256()
        self._size = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._raw.read(size)
        self._digest.update(chunk)
        self._size += len(chunk)
        return chunk

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Rewind (a position of 0 starts the digest over), or stay where it is."""
        if (offset, whence) in ((0, os.SEEK_SET), (0, os.SEEK_CUR)) or (
            whence == os.SEEK_SET and offset == self._size
        ):
            position = self._raw.seek(offset, whence)
            if position == 0:
                self._digest = hashlib.sha256()
                self._size = 0
            return position
        raise io.UnsupportedOperation("a hashing reader only rewinds to the start")

    def tell(self) -> int:
        return self._size

    def fileno(self) -> int:
        return self._raw.fileno()

    @property
    def sent(self) -> SentBytes:
        """The bytes read since the last rewind: after a request, the bytes it carried."""
        return SentBytes(sha256=self._digest.hexdigest(), size=self._size)


class RekaClient:
    """The Reka Vision image API: upload, get, list, delete, search.

    Thread-safe (httpx.Client is); not fork-safe: make it in the process that
    uses it. `timeout` and `limits` default to the named defaults in
    `reka_ingest.core.constants`; `transport` (tests) replaces httpx's own,
    and `limits` with it, since they only shape the default transport's pool.
    `on_response` hears of every answer, success or error.
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | SecretStr,
        path_prefix: str = c.DEFAULT_API_PATH_PREFIX,
        timeout: httpx.Timeout | None = None,
        limits: httpx.Limits | None = None,
        transport: httpx.BaseTransport | None = None,
        on_response: ResponseObserver | None = None,
    ) -> None:
        self._key = _check_key(api_key)
        self._on_response = on_response
        self._prefix = path_prefix.rstrip("/")
        self.base_url = base_url.rstrip("/")
        self._http = call_translated(
            lambda: httpx.Client(
                base_url=self.base_url,
                auth=_ApiKeyAuth(self._key),
                headers={"User-Agent": USER_AGENT},
                timeout=timeout if timeout is not None else _default_timeout(),
                limits=limits if limits is not None else _default_limits(),
                transport=transport,
                follow_redirects=False,
            ),
            secrets=self._secrets,
        )

    @classmethod
    def from_settings(
        cls,
        settings: RekaSettings,
        *,
        transport: httpx.BaseTransport | None = None,
        on_response: ResponseObserver | None = None,
    ) -> RekaClient:
        """The client `settings` describe; fails naming REKA_API_KEY when there is no key."""
        if settings.api_key is None:
            raise SettingsError("REKA_API_KEY: not set; the Reka client needs an API key")
        return cls(
            base_url=settings.api_base_url,
            api_key=settings.api_key,
            path_prefix=settings.api_path_prefix,
            timeout=settings.timeout(),
            limits=settings.limits(),
            transport=transport,
            on_response=on_response,
        )

    # --- lifecycle -----------------------------------------------------------------

    def close(self) -> None:
        """Close the connection pool. Safe to call twice."""
        self._http.close()

    @property
    def closed(self) -> bool:
        return self._http.is_closed

    def __enter__(self) -> RekaClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        shown = safe_url(httpx.URL(self.base_url))
        return f"RekaClient(base_url={shown!r}, path_prefix={self._prefix!r})"

    # --- endpoints -----------------------------------------------------------------

    def upload(
        self,
        items: Sequence[UploadItem],
        *,
        timeout: TimeoutArg = None,
        before_end: Callable[[], None] | None = None,
    ) -> UploadResult:
        """Upload `items` in ONE multipart request; results come back in input order.

        Each file is streamed from disk in large pieces (`reka_ingest.reka.multipart`,
        each read through a `HashingReader`) and closed afterwards whatever
        happens; the result's `sent` says what each part carried. A file that
        cannot be opened raises OSError before anything is sent: the caller
        checked the files, so that is its bug or a race it must record.
        `before_end` runs before the body's last piece is sent; what it raises
        ends the request unfinished and is raised as it is.
        """
        if not items:
            raise ApiUsageError("upload needs at least one item")
        metadata = _upload_metadata(items)
        with ExitStack() as stack:
            readers: builtins.list[HashingReader] = []
            for item in items:
                readers.append(HashingReader(stack.enter_context(item.path.open("rb"))))
            body = UploadBody(
                [("metadata", metadata)],
                [
                    ("images", item.filename, item.content_type, reader)
                    for item, reader in zip(items, readers, strict=True)
                ],
                before_end=before_end,
            )
            result = self._upload_request(
                len(items), content=body, headers=body.headers, timeout=timeout
            )
        return dataclasses.replace(result, sent=[reader.sent for reader in readers])

    def upload_urls(
        self,
        items: Sequence[UrlItem],
        *,
        timeout: TimeoutArg = None,
        encoding: Literal["form", "multipart"] = "form",
    ) -> UploadResult:
        """Upload the images at `items`' URLs in ONE request; results in input order.

        Sent as Reka's own CLI sends it: no file parts, the URLs inside the
        `metadata` JSON next to `requests` (`{"requests": [...], "image_urls":
        [...]}`), the server fetching each. `encoding` "form" (the default, what
        the CLI's httpx sends with no files) posts it urlencoded; "multipart"
        posts the one `metadata` field as multipart/form-data. A URL the server
        cannot fetch fails the whole request (the stand-in: a 400 whose `param`
        names it, `image_urls[i]`). `sent` is empty: no bytes leave this side.
        """
        if not items:
            raise ApiUsageError("upload_urls needs at least one item")
        if encoding not in ("form", "multipart"):
            raise ApiUsageError(f"encoding must be 'form' or 'multipart', got {encoding!r}")
        metadata = _upload_metadata(items, image_urls=[item.url for item in items])
        if encoding == "form":
            return self._upload_request(len(items), data={"metadata": metadata}, timeout=timeout)
        # A part with no filename is a plain form field; httpx goes multipart only with files.
        field = ("metadata", (None, metadata.encode(), None))
        return self._upload_request(len(items), files=[field], timeout=timeout)

    def get(self, image_id: str, *, timeout: TimeoutArg = None) -> Image:
        """One image by id; `ApiNotFound` when there is none."""
        response = self._send("GET", f"/images/{_path_id(image_id)}", timeout=timeout)
        return self._parse(response, Image)

    def list(
        self,
        limit: int = c.LIST_LIMIT_DEFAULT,
        offset: int = 0,
        *,
        timeout: TimeoutArg = None,
    ) -> builtins.list[Image]:
        """A page of images; there is no total and no cursor, so page by offset."""
        if not _is_int(limit) or not 1 <= limit <= c.LIST_LIMIT_MAX:
            raise ApiUsageError(f"limit must be an integer in 1..{c.LIST_LIMIT_MAX}, got {limit!r}")
        if not _is_int(offset) or offset < 0:
            raise ApiUsageError(f"offset must be an integer >= 0, got {offset!r}")
        response = self._send(
            "GET", "/images", params={"limit": limit, "offset": offset}, timeout=timeout
        )
        return self._parse(response, ImageList).results

    def delete(self, image_id: str, *, timeout: TimeoutArg = None) -> DeleteResult:
        """Delete one image; `ApiNotFound` when there is none."""
        response = self._send("DELETE", f"/images/{_path_id(image_id)}", timeout=timeout)
        return self._parse(response, DeleteResult)

    def fetch_digest(
        self, url: str, *, max_bytes: int, timeout: TimeoutArg = None
    ) -> ContentDigest | None:
        """The sha256 and length of what an `image_url` serves, streamed, never kept.

        Sent without the API key (an image URL is fetched as a browser would, and may
        point at another host); redirects are followed. None when the body is longer
        than `max_bytes` (it cannot be one of our files); a non-2xx answer raises the
        same `ApiError` as the endpoints (`ApiNotFound` for a 404).
        """
        if not isinstance(url, str) or not url:
            raise ApiUsageError(f"url must be a non-empty string, got {url!r}")

        def fetch() -> tuple[int, ContentDigest | None, httpx.Response | None]:
            with self._http.stream(
                "GET",
                url,
                auth=None,
                follow_redirects=True,
                timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout,
            ) as response:
                if not response.is_success:
                    response.read()
                    return response.status_code, None, response
                digest = hashlib.sha256()
                size = 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        return response.status_code, None, None
                    digest.update(chunk)
                return response.status_code, ContentDigest(digest.hexdigest(), size), None

        status, result, failed = call_translated(fetch, secrets=self._secrets)
        self._observe("GET", httpx.URL(url).path, status)
        if failed is not None:
            raise error_from_response(failed, secrets=self._secrets)
        return result

    def search(
        self,
        query: str,
        *,
        max_results: int = c.SEARCH_MAX_RESULTS_DEFAULT,
        search_mode: SearchMode | str = SearchMode.VISION,
        image_weight: float | None = None,
        text_weight: float | None = None,
        threshold: float | None = None,
        timeout: TimeoutArg = None,
    ) -> builtins.list[SearchResult]:
        """Images matching `query`, best first. Counts against the daily search quota."""
        if not isinstance(query, str):
            raise ApiUsageError(f"query must be a string, got {type(query).__name__}")
        if not _is_int(max_results) or max_results < 1:
            raise ApiUsageError(f"max_results must be an integer >= 1, got {max_results!r}")
        try:
            mode = SearchMode(search_mode)
        except ValueError:
            raise ApiUsageError(f"unknown search_mode {search_mode!r}") from None
        body: dict[str, Any] = {
            "query": query,
            "max_results": max_results,
            "search_mode": mode.value,
        }
        optional = {
            "image_weight": image_weight,
            "text_weight": text_weight,
            "threshold": threshold,
        }
        body.update({name: value for name, value in optional.items() if value is not None})
        response = self._send("POST", "/images/search", json=body, timeout=timeout)
        return self._parse(response, SearchResultList).results

    # --- plumbing ------------------------------------------------------------------

    def _upload_request(self, count: int, *, timeout: TimeoutArg, **body: Any) -> UploadResult:
        """POST one upload (`body`: httpx's data/files) whose answer must hold `count` results."""
        response = self._send("POST", "/images/upload", timeout=timeout, **body)
        images = self._parse(response, ImageList).results
        request_id = response.headers.get(c.REQUEST_ID_HEADER)
        if len(images) != count:
            raise ApiProtocolError(
                f"upload sent {count} images but the answer has {len(images)} results",
                status=response.status_code,
                request_id=request_id,
            )
        return UploadResult(
            images=images, request_id=request_id, rate_limit=parse_rate_limit(response.headers)
        )

    @property
    def _secrets(self) -> tuple[str]:
        return (self._key.get_secret_value(),)

    def _send(
        self, method: str, path: str, *, timeout: TimeoutArg = None, **kwargs: Any
    ) -> httpx.Response:
        """One request; a non-2xx answer or any httpx failure raises an ApiError."""
        url = f"{self._prefix}{path}"
        response = call_translated(
            lambda: self._http.request(
                method,
                url,
                timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout,
                **kwargs,
            ),
            secrets=self._secrets,
        )
        self._observe(method, url, response.status_code)
        if not response.is_success:
            error = error_from_response(response, secrets=self._secrets)
            log.debug(
                "reka_api_error",
                method=method,
                path=url,
                status=response.status_code,
                request_id=error.request_id,
                error_type=error.error_type,
            )
            raise error
        return response

    def _observe(self, method: str, path: str, status: int) -> None:
        if self._on_response is None:
            return
        try:
            self._on_response(method, path, status)
        except Exception as err:  # noqa: BLE001 - observing never breaks the call it observes
            log.warning("reka_observer_failed", method=method, path=path, error=repr(err))

    def _parse(self, response: httpx.Response, model: type[M]) -> M:
        """The body as `model`; not JSON or not that shape -> ApiProtocolError."""
        request_id = response.headers.get(c.REQUEST_ID_HEADER)
        where = f"{response.request.method} {response.request.url.path}"
        try:
            value = model.model_validate_json(response.content)
        except ValidationError as err:
            first = err.errors(include_url=False, include_input=False)[0]
            loc = ".".join(str(part) for part in first["loc"]) or "body"
            raise ApiProtocolError(
                f"unexpected answer to {where}: {loc}: {first['msg']}"
                f" ({err.error_count()} problem(s))",
                status=response.status_code,
                request_id=request_id,
            ) from None
        _stamp(value, request_id)
        return value


def _upload_metadata(
    items: Sequence[UploadItem | UrlItem], image_urls: builtins.list[str] | None = None
) -> str:
    """The upload's `metadata` field: one request entry per item, in order, compact JSON;
    with `image_urls` beside them for a URL upload (the shape Reka's CLI sends)."""
    doc: dict[str, Any] = {
        "requests": [
            {"indexing_config": {"index": item.index}, "metadata": item.metadata} for item in items
        ]
    }
    if image_urls is not None:
        doc["image_urls"] = image_urls
    return json.dumps(doc, separators=(",", ":"))


def _stamp(value: ApiModel, request_id: str | None) -> None:
    """Record the response's request id on a model and every model inside it."""
    value._request_id = request_id
    for name in type(value).model_fields:
        inner = getattr(value, name)
        items = inner if isinstance(inner, builtins.list) else [inner]
        for item in items:
            if isinstance(item, ApiModel):
                _stamp(item, request_id)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _path_id(image_id: str) -> str:
    """An image id as one path segment: percent-encoded, never empty."""
    if not isinstance(image_id, str) or not image_id:
        raise ApiUsageError(f"image_id must be a non-empty string, got {image_id!r}")
    return quote(image_id, safe="")

"""Fetch the images of a URL upload (`image_urls` in `metadata`), as Reka's server would.

Reka's CLI sends URL uploads with the URLs inside the `metadata` JSON and no
file parts (shared/reka-api.md); the server fetches each and treats the bytes
as an uploaded file. The stand-in does the same, under these rules:

- only `http` and `https` URLs with a host, at most `MAX_URL_CHARS` long; a
  URL that is not one is refused before anything is fetched;
- each URL gets `fetch_timeout` seconds in all (connect, redirects, body),
  at most `fetch_max_redirects` redirects (to http/https only), and at most
  `max_image_bytes` of body (by `Content-Length` when the server sends one,
  else counted as it arrives); all of one request together at most
  `max_request_bytes`, as the body of a file upload would be;
- a 2xx answer's body is the image if it sniffs as one (the declared type is
  not trusted, as for a file part); any other status, a connection or
  protocol error, a timeout, too many redirects or bytes that are not an
  image make the URL give no image;
- up to `fetch_concurrency` URLs of one request are fetched at once, over one
  connection pool that lives as long as the request (the TLS context, with
  httpx's default CA certificates, is built once per process);
- no API key, cookies or proxy settings from the environment go with a fetch
  (`trust_env=False`: the stand-in runs on loopback and fetches from it).

The stand-in fetches any host it can reach, loopback and private addresses
included (tests serve their images from 127.0.0.1): it is a development tool,
never to be exposed where strangers can make it fetch. Reasons never repeat
the URL, which may carry a signature or token; the index says which one.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final
from urllib.parse import unquote

import httpx

from reka_ingest.standin.config import StandinConfig
from reka_ingest.standin.form import ImagePart
from reka_ingest.standin.sniff import sniff_content_type

SCHEMES: Final = frozenset({"http", "https"})
MAX_URL_CHARS: Final = 8192
USER_AGENT: Final = "reka-standin-fetch"


class Problem(StrEnum):
    """Why an image URL gave no image."""

    BAD_URL = "bad_url"  # not an http(s) URL with a host
    STATUS = "http_status"  # answered, but not 2xx
    TOO_LARGE = "too_large"  # over max_image_bytes
    TIMEOUT = "timeout"
    REDIRECTS = "too_many_redirects"
    UNREACHABLE = "unreachable"  # connection, TLS or protocol error
    NOT_AN_IMAGE = "not_an_image"  # fetched, but the bytes are not an image (sniffed)


@dataclass(frozen=True, slots=True)
class Unfetchable:
    """One URL that gave no image: its position in `image_urls`, what, and why in words."""

    index: int
    problem: Problem
    reason: str


@dataclass(frozen=True, slots=True)
class Fetched:
    """What a URL upload's fetches gave: every image in input order, or what went wrong.

    `over_total` is set when the images together passed `max_request_bytes`
    (the fetches stopped there); otherwise `failures` lists every URL that
    gave no image, lowest index first, and `images` is complete when it is empty.
    """

    images: list[ImagePart]
    failures: list[Unfetchable]
    over_total: bool = False


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context for every fetch (httpx's default: certifi's CA bundle).

    Building one loads the bundle (~0.1 s), too slow to pay on each URL upload;
    a context is safe to share across connections.
    """
    return httpx.create_ssl_context()


def url_problem(url: str) -> str | None:
    """Why `url` cannot be fetched at all (not http/https, no host, too long), or None."""
    if len(url) > MAX_URL_CHARS:
        return f"is {len(url)} characters long; at most {MAX_URL_CHARS}"
    if url != url.strip() or any(ch.isspace() or ord(ch) < 0x20 for ch in url):
        return "holds whitespace or control characters"
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError):
        return "is not a valid URL"
    if parsed.scheme not in SCHEMES:
        return "must be an http or https URL"
    if not parsed.host:
        return "has no host"
    return None


def bad_urls(urls: Sequence[str]) -> list[Unfetchable]:
    """Every URL of `urls` that cannot be fetched at all, lowest index first."""
    found = []
    for i, url in enumerate(urls):
        problem = url_problem(url)
        if problem is not None:
            found.append(Unfetchable(i, Problem.BAD_URL, problem))
    return found


class _Tally:
    """Bytes received by all fetches of one request, against `max_request_bytes`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.received = 0

    def add(self, size: int) -> bool:
        """Count `size` more bytes; False once the request is over its limit."""
        self.received += size
        return self.received <= self.limit

    @property
    def over(self) -> bool:
        return self.received > self.limit


def _filename(url: httpx.URL) -> str | None:
    """The last path segment of the URL the bytes came from, as a file's name."""
    name = unquote(url.path.rsplit("/", 1)[-1])
    return name or None


async def _read(
    client: httpx.AsyncClient, index: int, url: str, limit: int, tally: _Tally
) -> ImagePart | Unfetchable | None:
    """GET `url`, keeping at most `limit` bytes of body; None once the request's total ran over."""
    async with client.stream("GET", url) as response:
        if not response.is_success:
            reason = f"answered HTTP {response.status_code} when fetched"
            return Unfetchable(index, Problem.STATUS, reason)
        declared = response.headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > limit:
            reason = f"serves {int(declared)} bytes; at most {limit}"
            return Unfetchable(index, Problem.TOO_LARGE, reason)
        chunks = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > limit:
                reason = f"serves more than {limit} bytes; at most {limit}"
                return Unfetchable(index, Problem.TOO_LARGE, reason)
            if not tally.add(len(chunk)):
                return None
            chunks.append(chunk)
        data = b"".join(chunks)
        if sniff_content_type(data) is None:
            return Unfetchable(index, Problem.NOT_AN_IMAGE, "is not an image (the bytes it serves)")
        kind = response.headers.get("content-type", "").partition(";")[0].strip() or None
        return ImagePart(
            filename=_filename(response.url),
            content_type=kind,
            data=data,
            source_url=url,
        )


async def _fetch_one(
    client: httpx.AsyncClient, index: int, url: str, config: StandinConfig, tally: _Tally
) -> ImagePart | Unfetchable | None:
    """`_read` within the fetch timeout, its failures as an `Unfetchable`."""
    try:
        async with asyncio.timeout(config.fetch_timeout):
            return await _read(client, index, url, config.max_image_bytes, tally)
    except (TimeoutError, httpx.TimeoutException):  # the whole fetch's, or one read's
        problem, reason = Problem.TIMEOUT, f"took longer than {config.fetch_timeout:g} s to fetch"
    except httpx.TooManyRedirects:
        hops = config.fetch_max_redirects
        problem, reason = Problem.REDIRECTS, f"redirected more than {hops} times"
    except httpx.UnsupportedProtocol:
        problem, reason = Problem.BAD_URL, "redirected to a URL that is not http or https"
    except (httpx.HTTPError, httpx.InvalidURL) as err:
        # The exception's class says what failed; its text may repeat the URL.
        problem, reason = Problem.UNREACHABLE, f"could not be fetched ({type(err).__name__})"
    return Unfetchable(index, problem, reason)


async def fetch_images(urls: Sequence[str], config: StandinConfig) -> Fetched:
    """Fetch every URL (checked by `bad_urls` first), at most `fetch_concurrency` at once."""
    tally = _Tally(config.max_request_bytes)
    gate = asyncio.Semaphore(config.fetch_concurrency)
    async with httpx.AsyncClient(
        follow_redirects=True,
        max_redirects=config.fetch_max_redirects,
        timeout=httpx.Timeout(config.fetch_timeout),
        limits=httpx.Limits(max_connections=config.fetch_concurrency),
        headers={"User-Agent": USER_AGENT},
        trust_env=False,
        verify=_tls(),
    ) as client:

        async def one(index: int, url: str) -> ImagePart | Unfetchable | None:
            async with gate:
                if tally.over:
                    return None
                return await _fetch_one(client, index, url, config, tally)

        outcomes = await asyncio.gather(*(one(i, url) for i, url in enumerate(urls)))
    if tally.over:
        return Fetched(images=[], failures=[], over_total=True)
    images = [o for o in outcomes if isinstance(o, ImagePart)]
    failures = [o for o in outcomes if isinstance(o, Unfetchable)]
    return Fetched(images=images, failures=failures)

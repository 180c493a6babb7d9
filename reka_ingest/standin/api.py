"""Handlers of the five Reka endpoints. Each takes the call and returns a reply
or raises `ApiError`; auth, faults, quota and headers are the pipeline's job
(reka_ingest.standin.pipeline)."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Mapping
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response

from reka_ingest.core.constants import LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX, IndexingStatus
from reka_ingest.standin.bodies import read_json
from reka_ingest.standin.errors import ApiError, invalid, not_found, too_large
from reka_ingest.standin.fetch import Unfetchable, bad_urls, fetch_images
from reka_ingest.standin.form import IMAGES_PARAM, ImagePart, UploadForm, read_upload
from reka_ingest.standin.indexing import status_at, will_fail
from reka_ingest.standin.metadata import PARAM as METADATA_PARAM
from reka_ingest.standin.metadata import (
    URLS_PARAM,
    UploadEntry,
    UploadMetadata,
    parse_metadata,
    security_metadata,
)
from reka_ingest.standin.pipeline import Call
from reka_ingest.standin.replies import JsonReply
from reka_ingest.standin.search import parse_request, rank
from reka_ingest.standin.sniff import sniff_content_type
from reka_ingest.standin.state import StandinState
from reka_ingest.standin.store import ImageRecord

FILES_PATH: Final = "/_standin/files/"
SEARCH_BODY_MAX_BYTES: Final = 1024 * 1024


def base_url(request: Request) -> str:
    """Scheme and host the client used, for absolute URLs in replies."""
    return f"{request.scope.get('scheme', 'http')}://{request.headers.get('host', 'localhost')}"


def image_url(base: str, image_id: str) -> str:
    """Where the image's bytes are fetched, without a key, on the host the client used.

    Reka documents `image_url` only as a string; the stand-in's is an absolute
    URL it serves itself (reka_ingest.standin.admin.file): exactly the bytes
    uploaded, with their sniffed content type, and a 404 once the image is
    deleted or expired.
    """
    return f"{base}{FILES_PATH}{image_id}"


def image_json(record: ImageRecord, base: str, status: IndexingStatus) -> dict[str, Any]:
    """The API's `Image`: all four keys, always."""
    return {
        "image_id": record.image_id,
        "image_url": image_url(base, record.image_id),
        "indexing_status": int(status),
        "upload_timestamp": record.upload_timestamp,
    }


def current_status(record: ImageRecord, now: float) -> IndexingStatus:
    return status_at(index=record.index, ready_at=record.ready_at, fails=record.fails, now=now)


def _check_count(param: str, images: int, entries: list[UploadEntry]) -> None:
    """400 on `metadata` unless there is one entry per image (`param` counts the images)."""
    if len(entries) != images:
        raise invalid(
            f"{images} {param} but {len(entries)} metadata entries",
            param=METADATA_PARAM,
            details=[{param: images, "metadata_entries": len(entries)}],
        )


def _unfetchable(failures: list[Unfetchable]) -> ApiError:
    """The 400 for a URL upload with URLs that gave no image: `param` names the first."""
    first = failures[0]
    param = f"{URLS_PARAM}[{first.index}]"
    return invalid(
        f"{param} {first.reason}",
        param=param,
        details=[
            {"param": f"{URLS_PARAM}[{f.index}]", "problem": f.problem.value, "message": f.reason}
            for f in failures
        ],
    )


async def _received(
    state: StandinState, form: UploadForm, meta: UploadMetadata
) -> tuple[list[ImagePart], str]:
    """The images of an upload, from its file parts or its `image_urls`, and their param name.

    Rules (shared/reka-api.md, reka_ingest.standin.fetch): an upload carries its
    images as file parts or as `image_urls` inside `metadata`, never both (400 on
    `image_urls`); an empty or absent `image_urls` with no file parts is a 400 on
    `images`. URLs are checked as a file upload's parts are: at most
    `max_images_per_request` (413 on `image_urls`), one metadata entry each (400
    on `metadata`), each fetched to at most `max_image_bytes`; an unusable or
    unfetchable URL is a 400 on `image_urls[i]`, the lowest such index, with
    every one in `details`; fetched images over `max_request_bytes` together
    are a 413 on `image_urls`.
    """
    config = state.config
    urls = meta.image_urls
    if not urls:
        if not form.images:
            raise invalid(
                f"at least one `{IMAGES_PARAM}` part (or `{URLS_PARAM}` in `metadata`) is required",
                param=IMAGES_PARAM,
            )
        _check_count(IMAGES_PARAM, len(form.images), meta.entries)
        return form.images, IMAGES_PARAM
    if form.images:
        raise invalid(
            f"an upload carries its images as `{IMAGES_PARAM}` file parts or as `{URLS_PARAM}` "
            f"in `metadata`, not both ({len(form.images)} parts and {len(urls)} URLs)",
            param=URLS_PARAM,
        )
    limit = config.max_images_per_request
    if len(urls) > limit:
        raise too_large(
            f"{len(urls)} image URLs in one request; at most {limit} images", param=URLS_PARAM
        )
    _check_count(URLS_PARAM, len(urls), meta.entries)
    refused = bad_urls(urls)
    if refused:
        state.stats.url_fetches_failed += len(refused)
        raise _unfetchable(refused)
    fetched = await fetch_images(urls, config)
    if fetched.over_total:
        raise too_large(
            f"the images at `{URLS_PARAM}` add up to more than {config.max_request_bytes} bytes",
            param=URLS_PARAM,
        )
    if fetched.failures:
        state.stats.url_fetches_failed += len(fetched.failures)
        raise _unfetchable(fetched.failures)
    state.stats.urls_fetched += len(fetched.images)
    return fetched.images, URLS_PARAM


async def upload(call: Call) -> Response:
    """POST /v1/images/upload: validate everything first, then store all or nothing.

    The images are file parts, or fetched from `image_urls` (`_received`); after
    that both are one path: sniffed (400 on `images[i]` or `image_urls[i]` for
    bytes that are not an image), stored, indexed and answered in input order.
    """
    state, request = call.state, call.request
    config = state.config
    form = await read_upload(request, config)
    meta = parse_metadata(form.metadata)
    entries = meta.entries
    images, param = await _received(state, form, meta)
    types = []
    for i, part in enumerate(images):
        content_type = sniff_content_type(part.data)
        if content_type is None:
            raise invalid(f"{param}[{i}] is not an image", param=f"{param}[{i}]")
        types.append(content_type)

    now = state.clock()
    knobs = state.faults.knobs
    records = []
    for part, entry, content_type in zip(images, entries, types, strict=True):
        image_id = str(uuid.uuid4())
        records.append(
            ImageRecord(
                image_id=image_id,
                filename=part.filename,
                declared_content_type=part.content_type,
                content_type=content_type,
                size=len(part.data),
                index=entry.index,
                metadata=entry.metadata,
                upload_timestamp=now,
                ready_at=now + knobs.index_delay,
                fails=will_fail(image_id, config.seed, knobs.index_fail_share),
                expires_at=now + knobs.retention if knobs.retention > 0 else None,
                source_url=part.source_url,
            )
        )
    pairs = [(record, part.data) for record, part in zip(records, images, strict=True)]
    if state.store.blocking_io:
        await asyncio.to_thread(_write_all, state, pairs)
    else:
        _write_all(state, pairs)
    for record in records:
        state.store.add(record)
    state.stats.upload(len(records), sum(r.size for r in records))
    base = base_url(request)
    return JsonReply(
        {
            # What each image is at this moment, as a get would say: 1 while its index
            # delay runs, and already 2 (or 3) when the delay is 0.
            "results": [image_json(r, base, current_status(r, now)) for r in records]
        }
    )


def _write_all(state: StandinState, pairs: list[tuple[ImageRecord, bytes]]) -> None:
    for record, data in pairs:
        state.store.write(record, data)


def _record(call: Call) -> ImageRecord:
    record = call.state.store.get(call.image_id)
    if record is None:
        raise not_found(f"image {call.image_id!r} not found")
    return record


async def get_image(call: Call) -> Response:
    """GET /v1/images/{id}: the Image, not wrapped."""
    record = _record(call)
    status = current_status(record, call.state.clock())
    return JsonReply(image_json(record, base_url(call.request), status))


_INTEGER: Final = re.compile(r"[+-]?[0-9]+")
_BIG_DIGITS: Final = 30  # more digits than any bound or store size; parsed as "huge"


def _int_param(
    query: Mapping[str, str], name: str, default: int, low: int, high: int | None
) -> int:
    """A query integer within `low..high`, or a 400 `validation_error` naming `name`.

    Only ASCII digits with an optional sign count as an integer (the OpenAPI
    type). Any integer is answered, however long: one with more digits than
    `_BIG_DIGITS` stands in as +-10**_BIG_DIGITS, which is past every bound and
    every page, so parsing never depends on Python's int-string digit limit.
    """
    raw = query.get(name)
    if not raw:  # absent, or blank (`?limit=`)
        return default
    if _INTEGER.fullmatch(raw) is None:
        raise invalid(f"{name} must be an integer", param=name)
    digits = raw.lstrip("+-").lstrip("0") or "0"
    value = int(digits) if len(digits) <= _BIG_DIGITS else 10**_BIG_DIGITS
    if raw.startswith("-"):
        value = -value
    if value < low or (high is not None and value > high):
        bounds = f"{low}..{high}" if high is not None else f">= {low}"
        raise invalid(f"{name} must be {bounds}", param=name)
    return value


async def list_images(call: Call) -> Response:
    """GET /v1/images?limit=&offset=: a page in upload order; no total, no cursor."""
    query = call.request.query_params
    limit = _int_param(query, "limit", LIST_LIMIT_DEFAULT, 1, LIST_LIMIT_MAX)
    offset = _int_param(query, "offset", 0, 0, None)
    now = call.state.clock()
    base = base_url(call.request)
    store = call.state.store
    # An offset past the end is an empty page; clamped first, because the store's
    # slicing refuses an index larger than sys.maxsize (that was a 500).
    page = store.page(min(offset, len(store)), limit)
    return JsonReply({"results": [image_json(r, base, current_status(r, now)) for r in page]})


async def delete_image(call: Call) -> Response:
    """DELETE /v1/images/{id}: gone from list, get, search and its image_url."""
    image_id = call.image_id
    if not await call.state.remove(image_id, expired=False):
        raise not_found(f"image {image_id!r} not found")
    return JsonReply({"status": "success", "message": f"Image {image_id} deleted"})


async def search_images(call: Call) -> Response:
    """POST /v1/images/search: indexed images ranked by `reka_ingest.standin.search`."""
    state = call.state
    search = parse_request(await read_json(call.request, SEARCH_BODY_MAX_BYTES))
    now = state.clock()
    records = {
        r.image_id: r
        for r in state.store.records()
        if current_status(r, now) is IndexingStatus.INDEXED
    }
    ranked = rank(search, ((r.image_id, r.upload_timestamp, r.metadata) for r in records.values()))
    base = base_url(call.request)
    return JsonReply(
        {
            "results": [
                {
                    "image_id": image_id,
                    "image_url": image_url(base, image_id),
                    "image_metadata": security_metadata(records[image_id].metadata),
                    "upload_timestamp": records[image_id].upload_timestamp,
                    "score": score,
                }
                for image_id, score in ranked
            ]
        }
    )

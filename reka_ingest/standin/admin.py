"""The `/_standin/` surface: what tests, drills and benchmarks in another
process need to see and steer the server. All of it needs a valid key,
except `/_standin/files/{id}`, which plays the part of Reka's image URLs
(a client fetches those without its API key).

`POST /_standin/images/{id}/expire` forgets one image as the retention would
(Reka's developer tier deletes images 30 days after upload): gone from list,
get, search and its image URL, counted in `images_expired`, and unlike Delete
Image never faulted, rate-limited or counted as a client's request."""

from __future__ import annotations

import hashlib
from typing import Final

from pydantic import ValidationError
from starlette.responses import Response

from reka_ingest.standin.api import current_status
from reka_ingest.standin.bodies import read_json
from reka_ingest.standin.errors import invalid, not_found
from reka_ingest.standin.pipeline import Call
from reka_ingest.standin.replies import JsonReply

FAULTS_BODY_MAX_BYTES: Final = 64 * 1024


async def stats(call: Call) -> Response:
    state = call.state
    return JsonReply(state.stats.snapshot(images_stored=len(state.store)))


async def image_detail(call: Call) -> Response:
    """What the server received for one image: metadata, index flag, name, type, size,
    sha256, and the URL it was fetched from (null for a file part)."""
    state = call.state
    image_id = call.image_id
    record = state.store.get(image_id)
    data = state.store.data(image_id)
    if record is None or data is None:
        raise not_found(f"image {image_id!r} not found")
    return JsonReply(
        {
            "image_id": record.image_id,
            "filename": record.filename,
            "declared_content_type": record.declared_content_type,
            "content_type": record.content_type,
            "size": record.size,
            "sha256": hashlib.sha256(data).hexdigest(),
            "index": record.index,
            "metadata": record.metadata,
            "upload_timestamp": record.upload_timestamp,
            "ready_at": record.ready_at,
            "fails": record.fails,
            "expires_at": record.expires_at,
            "source_url": record.source_url,
            "indexing_status": int(current_status(record, state.clock())),
        }
    )


async def expire_image(call: Call) -> Response:
    """Forget one image now, as its retention running out would; 404 if unknown."""
    image_id = call.image_id
    if not await call.state.remove(image_id, expired=True):
        raise not_found(f"image {image_id!r} not found")
    return JsonReply({"status": "success", "message": f"Image {image_id} expired"})


async def get_faults(call: Call) -> Response:
    return JsonReply(call.state.faults.knobs.model_dump(mode="json"))


async def set_faults(call: Call) -> Response:
    """Change some fault knobs: a JSON object of knob -> value; the rest stay."""
    body = await read_json(call.request, FAULTS_BODY_MAX_BYTES)
    if not isinstance(body, dict):
        raise invalid("faults body must be a JSON object", param="body")
    try:
        knobs = call.state.faults.update(body)
    except ValidationError as err:
        details = [
            {"param": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in err.errors()
        ]
        raise invalid("invalid fault knobs", param="body", details=details) from None
    return JsonReply(knobs.model_dump(mode="json"))


async def reset(call: Call) -> Response:
    call.state.reset()
    return JsonReply({"status": "success", "message": "stand-in state reset"})


async def file(call: Call) -> Response:
    """The bytes behind an `image_url`, with the sniffed content type."""
    store = call.state.store
    image_id = call.image_id
    record = store.get(image_id)
    data = store.data(image_id)
    if record is None or data is None:
        raise not_found(f"image {image_id!r} not found")
    return Response(data, media_type=record.content_type)

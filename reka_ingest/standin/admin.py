"""The `/_standin/` surface: what tests, drills and benchmarks in another
process need to see and steer the server. All of it needs a valid key,
except `/_standin/files/{id}`, which plays the part of Reka's image URLs
(a client fetches those without its API key)."""

from __future__ import annotations

import hashlib
from typing import Final

from pydantic import ValidationError

from reka_ingest.standin.api import Call, current_status
from reka_ingest.standin.asgi import Reply, json_reply
from reka_ingest.standin.errors import invalid, not_found

FAULTS_BODY_MAX_BYTES: Final = 64 * 1024


async def stats(call: Call) -> Reply:
    state = call.state
    return json_reply(state.stats.snapshot(images_stored=len(state.store)))


async def image_detail(call: Call) -> Reply:
    """What the server received for one image: metadata, index flag, name, type, size, sha256."""
    state = call.state
    image_id = call.image_id or ""
    record = state.store.get(image_id)
    data = state.store.data(image_id)
    if record is None or data is None:
        raise not_found(f"image {image_id!r} not found")
    return json_reply(
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
            "indexing_status": int(current_status(record, state.clock())),
        }
    )


async def get_faults(call: Call) -> Reply:
    return json_reply(call.state.faults.knobs.model_dump(mode="json"))


async def set_faults(call: Call) -> Reply:
    """Change some fault knobs: a JSON object of knob -> value; the rest stay."""
    body = await call.request.json_body(FAULTS_BODY_MAX_BYTES)
    if not isinstance(body, dict):
        raise invalid("faults body must be a JSON object", param="body")
    try:
        knobs = call.state.faults.update(body)
    except ValidationError as err:
        details = [
            {"param": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in err.errors()
        ]
        raise invalid("invalid fault knobs", param="body", details=details) from None
    return json_reply(knobs.model_dump(mode="json"))


async def reset(call: Call) -> Reply:
    call.state.reset()
    return json_reply({"status": "success", "message": "stand-in state reset"})


async def file(call: Call) -> Reply:
    """The bytes behind an `image_url`, with the sniffed content type."""
    store = call.state.store
    image_id = call.image_id or ""
    record = store.get(image_id)
    data = store.data(image_id)
    if record is None or data is None:
        raise not_found(f"image {image_id!r} not found")
    return Reply(200, data, content_type=record.content_type.encode())

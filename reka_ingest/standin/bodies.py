"""Request bodies under a size limit: refused (413) by their declared length
before a byte is read, or as soon as more than the limit has arrived."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.types import Message

from reka_ingest.standin.errors import invalid, too_large


def bounded(request: Request, limit: int) -> Request:
    """The same request, its body read through a counter that stops at `limit` bytes.

    Raises the 413 at once when `Content-Length` already says more; otherwise
    the body's reader (`body()`, `stream()`, `form()`) raises it from the
    chunk that goes past the limit.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise invalid("Content-Length is not a number", param="content-length") from None
        if length > limit:
            raise too_large(f"request body of {length} bytes exceeds {limit} bytes")
    upstream = request.receive
    received = 0

    async def receive() -> Message:
        nonlocal received
        message = await upstream()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise too_large(f"request body exceeds {limit} bytes")
        return message

    return Request(request.scope, receive)


async def read_json(request: Request, limit: int) -> Any:
    """The body as JSON, at most `limit` bytes of it; 400 when it is not JSON."""
    raw = await bounded(request, limit).body()
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise invalid(f"request body is not JSON: {err}", param="body") from None

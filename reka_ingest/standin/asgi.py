"""The little HTTP layer the raw ASGI app needs: a parsed request, a reply, the body.

No web framework: the stand-in is the far end of every benchmark, and a
framework's routing, middleware and validation would cost more than the
work itself. This module is the whole of what it would have given us.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl

from reka_ingest.standin.errors import invalid, too_large

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON_TYPE: Final = b"application/json"


@dataclass(slots=True)
class Request:
    """The parts of an ASGI scope the handlers use, decoded once."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    scheme: str
    receive: Receive

    @classmethod
    def from_scope(cls, scope: Scope, receive: Receive) -> Request:
        raw_query: bytes = scope.get("query_string", b"")
        return cls(
            method=scope["method"],
            path=scope["path"],
            query=dict(parse_qsl(raw_query.decode("latin-1"))) if raw_query else {},
            headers={k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
            scheme=scope.get("scheme", "http"),
            receive=receive,
        )

    @property
    def base_url(self) -> str:
        """Scheme and host the client used, for absolute URLs in replies."""
        return f"{self.scheme}://{self.headers.get('host', 'localhost')}"

    async def body(self, limit: int) -> bytes:
        """The whole body, refusing (413) a declared or actual size over `limit`."""
        declared = self.headers.get("content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                raise invalid("Content-Length is not a number", param="content-length") from None
            if length > limit:
                raise too_large(f"request body of {length} bytes exceeds {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                break
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise too_large(f"request body exceeds {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def json_body(self, limit: int) -> Any:
        raw = await self.body(limit)
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise invalid(f"request body is not JSON: {err}", param="body") from None


@dataclass(slots=True)
class Reply:
    """A complete response, before the app adds request id and rate-limit headers."""

    status: int
    body: bytes
    content_type: bytes = JSON_TYPE
    headers: Headers = field(default_factory=list)


def json_reply(payload: Any, status: int = 200) -> Reply:
    return Reply(status, json.dumps(payload, separators=(",", ":")).encode())


async def send_reply(send: Send, reply: Reply, headers: Headers) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": reply.status,
            "headers": [
                (b"content-type", reply.content_type),
                (b"content-length", str(len(reply.body)).encode()),
                *reply.headers,
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": reply.body})


async def send_and_drop(send: Send, reply: Reply, headers: Headers) -> None:
    """Start the response, then return without its body.

    uvicorn closes the transport when an app returns with a response started
    but not completed, so the client sees a real connection drop mid-response
    (httpx: RemoteProtocolError), not an HTTP error status.
    """
    await send(
        {
            "type": "http.response.start",
            "status": reply.status,
            "headers": [
                (b"content-type", reply.content_type),
                (b"content-length", str(len(reply.body)).encode()),
                *headers,
            ],
        }
    )

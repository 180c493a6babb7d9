"""What the stand-in answers with: JSON bodies, Reka's error envelope, a dropped
connection, and the headers and counters every reply gets on its way out."""

from __future__ import annotations

import json
from typing import Any, Final

from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from reka_ingest.core.constants import REQUEST_ID_HEADER
from reka_ingest.standin.errors import ApiError
from reka_ingest.standin.quota import RateInfo
from reka_ingest.standin.stats import Stats

_REQUEST_ID: Final = REQUEST_ID_HEADER.lower().encode()


class JsonReply(JSONResponse):
    """A compact JSON body rendered by `json.dumps`' defaults.

    Starlette's own renderer refuses NaN and infinities (a 500), but stored
    metadata may hold them: `json.loads` accepts them in an upload's
    `metadata` part, so the stand-in sends back what it took.
    """

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":")).encode()


def error_reply(err: ApiError) -> JsonReply:
    """`{"error": {...}}` with the error's status."""
    return JsonReply(err.envelope(), err.status)


class DroppedReply(Response):
    """A reply whose connection is dropped: its head is sent, its body never is.

    uvicorn closes the transport when an app returns with a response started
    but not completed, so the client sees a real connection drop mid-response
    (httpx: RemoteProtocolError), not an HTTP error status.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )


def dropped(reply: Response) -> DroppedReply:
    """`reply`'s status and head, to be cut off before its body."""
    return DroppedReply(reply.body, reply.status_code, media_type=reply.media_type)


def finish(
    reply: Response, stats: Stats, *, route: str, request_id: str, rate: RateInfo
) -> Response:
    """Stamp `X-Request-ID` and the four rate-limit headers on `reply`, and count it."""
    reply.raw_headers.append((_REQUEST_ID, request_id.encode()))
    reply.raw_headers.extend(rate.headers())
    if isinstance(reply, DroppedReply):
        stats.count(route, "dropped")
        stats.connections_dropped += 1
    else:
        stats.count(route, reply.status_code)
    return reply

"""The stand-in's ASGI app: Starlette routing each request to its endpoint.

Routing, requests and multipart parsing are Starlette's (and
python-multipart's, as in Reka's own FastAPI server); what a request goes
through on a route is reka_ingest.standin.pipeline. A request no route
takes is answered here, in the same envelope and with the same headers.
"""

from __future__ import annotations

import uuid

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from reka_ingest.standin import routes
from reka_ingest.standin.pipeline import UNKNOWN_ROUTE, http_error
from reka_ingest.standin.replies import error_reply, finish
from reka_ingest.standin.state import StandinState


def create_app(state: StandinState) -> Starlette:
    """A stand-in app serving `state` (store, quotas, faults, stats)."""

    async def no_route(request: Request, exc: Exception) -> Response:
        """404 for a path no route serves, or serves for another method."""
        if not isinstance(exc, HTTPException):  # Starlette passes only what was registered
            raise exc
        return finish(
            error_reply(http_error(exc, request)),
            state.stats,
            route=UNKNOWN_ROUTE,
            request_id=uuid.uuid4().hex,
            rate=state.upload_quota.fresh(),
        )

    app = Starlette(routes=routes.table(state), exception_handlers={HTTPException: no_route})
    app.router.redirect_slashes = False  # `/x/` is not `/x`: no 307 to the other
    return app

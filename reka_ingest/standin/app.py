"""The stand-in's ASGI app: auth, faults, quota and headers around the handlers.

A request goes: route -> key (401) -> [API routes only] latency, fault plan
(429 burst, 500, drop-before), quota (429) -> handler -> [drop-after] ->
reply. Every reply, errors included, carries `X-Request-ID` and the four
rate-limit headers.

What the rate-limit headers report (shared/reka-api.md leaves it open for
endpoints without a published limit):
- upload and search: their own rolling quota, counted by this request;
- get, list, delete, `/_standin/*`: the caller's upload quota, looked at but
  not counted, since that is the budget a client shapes its traffic by;
- 401: the upload quota of a key that has used nothing (no key, no usage);
- a 429 burst: limit as configured, remaining 0, reset and retry-after the
  burst's retry-after.
An unlimited quota (0) reports `reka_ingest.standin.quota.UNLIMITED_REPORTED`.

Quota is counted before the body is read or validated: a malformed upload
still spends a request, as behind a real rate limiter.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Final

from reka_ingest.core.constants import API_KEY_HEADER, REQUEST_ID_HEADER
from reka_ingest.core.logs import get_logger
from reka_ingest.standin import routes
from reka_ingest.standin.api import Call
from reka_ingest.standin.asgi import (
    Receive,
    Reply,
    Request,
    Scope,
    Send,
    json_reply,
    send_and_drop,
    send_reply,
)
from reka_ingest.standin.config import DropWhen, StandinConfig
from reka_ingest.standin.errors import (
    ApiError,
    not_found,
    rate_limited,
    server_error,
    unauthenticated,
)
from reka_ingest.standin.faults import Outcome
from reka_ingest.standin.quota import RateInfo
from reka_ingest.standin.state import StandinState

_REQUEST_ID: Final = REQUEST_ID_HEADER.lower().encode()
_API_KEY: Final = API_KEY_HEADER.lower()
_BEARER: Final = "bearer "

log = get_logger(__name__)


def _error_reply(err: ApiError) -> Reply:
    return json_reply(err.envelope(), err.status)


class StandinApp:
    """One stand-in server's ASGI callable; `state` holds everything it knows."""

    def __init__(self, config: StandinConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.state = StandinState.create(config, clock)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request = Request.from_scope(scope, receive)
        request_id = uuid.uuid4().hex
        found = routes.resolve(request.method, request.path)
        name = found[0].name if found else "unknown"
        reply, info, drop = await self._handle(request, found, request_id)
        headers = [(_REQUEST_ID, request_id.encode()), *info.headers()]
        if drop:
            self.state.stats.count(name, "dropped")
            self.state.stats.connections_dropped += 1
            await send_and_drop(send, reply, headers)
            return
        self.state.stats.count(name, reply.status)
        await send_reply(send, reply, headers)

    def _key(self, request: Request) -> str | None:
        key = request.headers.get(_API_KEY)
        if key is None:
            auth = request.headers.get("authorization", "")
            if auth[: len(_BEARER)].lower() == _BEARER:
                key = auth[len(_BEARER) :].strip()
        return key if key in self.state.keys else None

    async def _handle(
        self, request: Request, found: tuple[routes.Route, str | None] | None, request_id: str
    ) -> tuple[Reply, RateInfo, bool]:
        """(reply, rate-limit info, drop the connection?) for one request."""
        state = self.state
        info = state.upload_quota.fresh()
        drop_after = False
        try:
            if found is None:
                raise not_found(f"no route for {request.method} {request.path}")
            route, image_id = found
            key = None
            if route.guard is not routes.Guard.PUBLIC:
                key = self._key(request)
                if key is None:
                    raise unauthenticated(
                        f"missing or unknown API key ({API_KEY_HEADER} or Authorization: Bearer)"
                    )
                info = state.upload_quota.peek(key)
            if route.guard is routes.Guard.API and key is not None:
                drop, drop_after, info = await self._faults_and_quota(route, key, info, request_id)
                if drop:
                    return json_reply({}), info, True
            reply = await route.handler(Call(state, request, image_id))
        except ApiError as err:
            if err.status >= 500 or err.status == 429:
                log.info(
                    "standin_error", request_id=request_id, status=err.status, type=err.error_type
                )
            reply = _error_reply(err)
            if err.status == 429 and err.rate_info is not None:
                info = err.rate_info
        except Exception:
            log.exception("standin_handler_crashed", request_id=request_id, path=request.path)
            reply = _error_reply(server_error("internal error in the stand-in"))
        return reply, info, drop_after

    async def _faults_and_quota(
        self, route: routes.Route, key: str, info: RateInfo, request_id: str
    ) -> tuple[bool, bool, RateInfo]:
        """Apply the fault plan and the route's quota; (drop now, drop after, rate info)."""
        state = self.state
        plan = state.faults.plan()
        if plan.delay > 0:
            await asyncio.sleep(plan.delay)
        if plan.outcome is not Outcome.NONE:
            log.info(
                "standin_fault", request_id=request_id, route=route.name, fault=plan.outcome.value
            )
        if plan.outcome is Outcome.BURST_429:
            quota = state.search_quota if route.quota is routes.Quota.SEARCH else state.upload_quota
            burst = RateInfo(quota.reported_limit, 0, plan.retry_after, plan.retry_after)
            raise rate_limited("rate limit exceeded (injected burst)").with_rate_info(burst)
        if plan.outcome is Outcome.FAIL:
            raise server_error("injected server error")
        drop = plan.outcome is Outcome.DROP
        if drop and plan.drop_when is DropWhen.BEFORE:
            return True, False, info
        if route.quota is not routes.Quota.NONE:
            quota = state.upload_quota if route.quota is routes.Quota.UPLOAD else state.search_quota
            allowed, info = quota.take(key)
            if not allowed:
                raise rate_limited(
                    f"{route.name} quota of {quota.limit} requests per {quota.window:g} s exceeded"
                ).with_rate_info(info)
        return False, drop, info


async def _lifespan(receive: Receive, send: Send) -> None:
    """Nothing to start or stop; answer the protocol so any ASGI server is happy."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def create_app(config: StandinConfig, clock: Callable[[], float] = time.time) -> StandinApp:
    """A fresh stand-in app with its own state; `clock` drives quota windows and indexing."""
    return StandinApp(config, clock)

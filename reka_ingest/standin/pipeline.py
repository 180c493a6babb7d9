"""What happens to a routed request before and after its handler: key, faults, quota, reply.

A request goes: expiry -> key (401) -> [API routes only] latency, fault plan
(429 burst, 500, drop-before), quota (429) -> handler -> [drop-after] -> reply.
Expiry first, on every route: images whose retention ran out are gone before
anything looks (reka_ingest.standin.store), whoever asks.
Every reply, errors included, carries `X-Request-ID` and the four rate-limit
headers (`replies.finish`).

What the rate-limit headers report (shared/reka-api.md leaves it open for
endpoints without a published limit):
- upload and search: their own rolling quota, counted by this request;
- get, list, delete, `/_standin/*`: the caller's upload quota, looked at but
  not counted, since that is the budget a client shapes its traffic by;
- 401, an unknown route, an image URL: the upload quota of a key that has
  used nothing (no key, no usage);
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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Final

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from reka_ingest.core.constants import API_KEY_HEADER
from reka_ingest.core.logs import get_logger
from reka_ingest.standin.config import DropWhen
from reka_ingest.standin.errors import (
    ApiError,
    invalid,
    not_found,
    rate_limited,
    server_error,
    too_large,
    unauthenticated,
)
from reka_ingest.standin.faults import Outcome
from reka_ingest.standin.quota import RateInfo, RollingQuota
from reka_ingest.standin.replies import JsonReply, dropped, error_reply, finish
from reka_ingest.standin.state import StandinState

_BEARER: Final = "bearer "
UNKNOWN_ROUTE: Final = "unknown"  # the stats name of requests no route took

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Call:
    """One request on its way through a handler, with the server's state."""

    state: StandinState
    request: Request

    @property
    def image_id(self) -> str:
        """The `{image_id}` of the path ("" on routes without one)."""
        return str(self.request.path_params.get("image_id", ""))


Handler = Callable[[Call], Awaitable[Response]]


class Guard(Enum):
    """What a route needs before its handler runs."""

    API = "api"  # key, faults, rate-limit headers
    ADMIN = "admin"  # key only
    PUBLIC = "public"  # nothing (image URLs)


class Quota(Enum):
    NONE = "none"
    UPLOAD = "upload"
    SEARCH = "search"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A handler and what guards it; `name` is its key in stats and logs."""

    name: str
    handler: Handler
    guard: Guard
    quota: Quota = Quota.NONE


def _key(state: StandinState, request: Request) -> str:
    """The caller's accepted API key, from either header; else 401."""
    key = request.headers.get(API_KEY_HEADER)
    if key is None:
        auth = request.headers.get("authorization", "")
        if auth[: len(_BEARER)].lower() == _BEARER:
            key = auth[len(_BEARER) :].strip()
    if key is None or key not in state.keys:
        raise unauthenticated(
            f"missing or unknown API key ({API_KEY_HEADER} or Authorization: Bearer)"
        )
    return key


def _quota(state: StandinState, quota: Quota) -> RollingQuota:
    return state.search_quota if quota is Quota.SEARCH else state.upload_quota


async def hold(seconds: float) -> None:
    """Wait at least `seconds` by the monotonic clock. uvloop's timers count whole
    milliseconds from a truncated start, so when something else wakes the loop near
    the end, `asyncio.sleep` alone returns up to a millisecond short."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        await asyncio.sleep(left)


async def _faults_and_quota(
    state: StandinState, endpoint: Endpoint, key: str, info: RateInfo, request_id: str
) -> tuple[bool, bool, RateInfo]:
    """Apply the fault plan and the route's quota; (drop now, drop after, rate info)."""
    plan = state.faults.plan(upload=endpoint.quota is Quota.UPLOAD)
    if plan.delay > 0:
        await hold(plan.delay)
    if plan.outcome is not Outcome.NONE:
        log.info(
            "standin_fault", request_id=request_id, route=endpoint.name, fault=plan.outcome.value
        )
    if plan.outcome is Outcome.BURST_429:
        limit = _quota(state, endpoint.quota).reported_limit
        burst = RateInfo(limit, 0, plan.retry_after, plan.retry_after)
        raise rate_limited("rate limit exceeded (injected burst)").with_rate_info(burst)
    if plan.outcome is Outcome.FAIL:
        raise server_error("injected server error")
    drop = plan.outcome is Outcome.DROP
    if drop and plan.drop_when is DropWhen.BEFORE:
        return True, False, info
    if endpoint.quota is not Quota.NONE:
        quota = _quota(state, endpoint.quota)
        allowed, info = quota.take(key)
        if not allowed:
            raise rate_limited(
                f"{endpoint.name} quota of {quota.limit} requests per {quota.window:g} s exceeded"
            ).with_rate_info(info)
    return False, drop, info


def http_error(err: HTTPException, request: Request) -> ApiError:
    """Starlette's own HTTP errors in Reka's envelope.

    A path no route serves, or serves for another method (405), is a 404:
    the stand-in has no such operation, whatever the path.
    """
    if err.status_code in (404, 405):
        path = request.scope["path"]
        return not_found(f"no route for {request.method} {path}")
    if err.status_code == 413:
        return too_large(err.detail)
    if err.status_code >= 500:
        return server_error(err.detail)
    return invalid(err.detail)


async def serve(state: StandinState, endpoint: Endpoint, request: Request) -> Response:
    """Run one request through the guards and its handler; always a reply, never a raise.
    An upload's arrival and answer times go to `stats.upload_spans`."""
    arrived = time.time()
    reply = await _serve(state, endpoint, request)
    if endpoint.quota is Quota.UPLOAD:
        state.stats.upload_spans.append((arrived, time.time()))
    return reply


async def _serve(state: StandinState, endpoint: Endpoint, request: Request) -> Response:
    request_id = uuid.uuid4().hex
    info = state.upload_quota.fresh()
    drop_after = False
    try:
        await state.expire()
        if endpoint.guard is not Guard.PUBLIC:
            key = _key(state, request)
            info = state.upload_quota.peek(key)
            if endpoint.guard is Guard.API:
                drop, drop_after, info = await _faults_and_quota(
                    state, endpoint, key, info, request_id
                )
                if drop:
                    return finish(
                        dropped(JsonReply({})),
                        state.stats,
                        route=endpoint.name,
                        request_id=request_id,
                        rate=info,
                    )
        reply = await endpoint.handler(Call(state, request))
    except ApiError as err:
        if err.status >= 500 or err.status == 429:
            log.info("standin_error", request_id=request_id, status=err.status, type=err.error_type)
        reply = error_reply(err)
        if err.status == 429 and err.rate_info is not None:
            info = err.rate_info
    except HTTPException as err:
        reply = error_reply(http_error(err, request))
    except ClientDisconnect:
        log.info("standin_client_gone", request_id=request_id, path=request.scope["path"])
        reply = error_reply(invalid("the client left before its body was complete", "body"))
    except Exception:
        log.exception("standin_handler_crashed", request_id=request_id, path=request.scope["path"])
        reply = error_reply(server_error("internal error in the stand-in"))
    if drop_after:
        reply = dropped(reply)
    return finish(reply, state.stats, route=endpoint.name, request_id=request_id, rate=info)


def endpoint_function(
    state: StandinState, endpoint: Endpoint
) -> Callable[[Request], Awaitable[Response]]:
    """`endpoint` as a Starlette request -> response function bound to `state`."""

    async def respond(request: Request) -> Response:
        return await serve(state, endpoint, request)

    return respond

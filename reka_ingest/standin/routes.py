"""Which handler answers a method and path, and what guards it.

`/v1/images/...` is the API. The same paths without `/v1` are accepted too
(older Reka pages show them; it costs one prefix check). `/_standin/...` is
the stand-in's own surface (reka_ingest.standin.admin).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Final

from reka_ingest.standin import admin, api
from reka_ingest.standin.asgi import Reply

API_PREFIX: Final = "/v1"
IMAGES: Final = "/images"
ADMIN: Final = "/_standin"

Handler = Callable[[api.Call], Awaitable[Reply]]


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
class Route:
    name: str  # for stats and logs
    handler: Handler
    guard: Guard
    quota: Quota = Quota.NONE


UPLOAD: Final = Route("upload", api.upload, Guard.API, Quota.UPLOAD)
SEARCH: Final = Route("search", api.search_images, Guard.API, Quota.SEARCH)
LIST: Final = Route("list", api.list_images, Guard.API)
GET: Final = Route("get", api.get_image, Guard.API)
DELETE: Final = Route("delete", api.delete_image, Guard.API)
FILE: Final = Route("file", admin.file, Guard.PUBLIC)
STATS: Final = Route("admin.stats", admin.stats, Guard.ADMIN)
IMAGE_DETAIL: Final = Route("admin.image", admin.image_detail, Guard.ADMIN)
GET_FAULTS: Final = Route("admin.faults", admin.get_faults, Guard.ADMIN)
SET_FAULTS: Final = Route("admin.faults", admin.set_faults, Guard.ADMIN)
RESET: Final = Route("admin.reset", admin.reset, Guard.ADMIN)

_IMAGE_ROUTES: Final = {("POST", "upload"): UPLOAD, ("POST", "search"): SEARCH}
_ADMIN_ROUTES: Final = {
    ("GET", "stats"): STATS,
    ("GET", "faults"): GET_FAULTS,
    ("POST", "faults"): SET_FAULTS,
    ("POST", "reset"): RESET,
}


def _single(rest: str) -> str | None:
    """`/abc` -> `abc`; anything with another slash or empty -> None."""
    if rest.startswith("/") and len(rest) > 1 and "/" not in rest[1:]:
        return rest[1:]
    return None


def _images(method: str, rest: str) -> tuple[Route, str | None] | None:
    if rest in ("", "/"):
        return (LIST, None) if method == "GET" else None
    leaf = _single(rest)
    if leaf is None:
        return None
    named = _IMAGE_ROUTES.get((method, leaf))
    if named is not None:
        return named, None
    if method == "GET":
        return GET, leaf
    if method == "DELETE":
        return DELETE, leaf
    return None


def _admin(method: str, rest: str) -> tuple[Route, str | None] | None:
    for prefix, by_id in (("/files", FILE), ("/images", IMAGE_DETAIL)):
        if rest.startswith(prefix + "/") and method == "GET":
            leaf = _single(rest[len(prefix) :])
            return (by_id, leaf) if leaf is not None else None
    name = _single(rest)
    named = _ADMIN_ROUTES.get((method, name)) if name is not None else None
    return (named, None) if named is not None else None


def resolve(method: str, path: str) -> tuple[Route, str | None] | None:
    """(route, image id from the path) or None for no such route."""
    if path.startswith(ADMIN):
        return _admin(method, path[len(ADMIN) :])
    if path.startswith(API_PREFIX + IMAGES):
        path = path[len(API_PREFIX) :]
    if path.startswith(IMAGES) and (len(path) == len(IMAGES) or path[len(IMAGES)] == "/"):
        return _images(method, path[len(IMAGES) :])
    return None

"""Which endpoint answers a method and path, and what guards it.

`/v1/images/...` is the API. The same paths without `/v1` are accepted too
(older Reka pages show them). `/_standin/...` is the stand-in's own surface
(reka_ingest.standin.admin). Each route answers its one method: a GET route
does not answer HEAD, and a path served for another method is a 404
(reka_ingest.standin.pipeline.http_error).
"""

from __future__ import annotations

from typing import Final

from starlette.routing import Route

from reka_ingest.standin import admin, api
from reka_ingest.standin.pipeline import Endpoint, Guard, Quota, endpoint_function
from reka_ingest.standin.state import StandinState

API_PREFIX: Final = "/v1"
LEGACY_PREFIX: Final = ""
ADMIN: Final = "/_standin"

UPLOAD: Final = Endpoint("upload", api.upload, Guard.API, Quota.UPLOAD)
SEARCH: Final = Endpoint("search", api.search_images, Guard.API, Quota.SEARCH)
LIST: Final = Endpoint("list", api.list_images, Guard.API)
GET: Final = Endpoint("get", api.get_image, Guard.API)
DELETE: Final = Endpoint("delete", api.delete_image, Guard.API)
FILE: Final = Endpoint("file", admin.file, Guard.PUBLIC)
STATS: Final = Endpoint("admin.stats", admin.stats, Guard.ADMIN)
UPLOAD_SPANS: Final = Endpoint("admin.upload_spans", admin.upload_spans, Guard.ADMIN)
IMAGE_DETAIL: Final = Endpoint("admin.image", admin.image_detail, Guard.ADMIN)
EXPIRE: Final = Endpoint("admin.expire", admin.expire_image, Guard.ADMIN)
GET_FAULTS: Final = Endpoint("admin.faults", admin.get_faults, Guard.ADMIN)
SET_FAULTS: Final = Endpoint("admin.faults", admin.set_faults, Guard.ADMIN)
RESET: Final = Endpoint("admin.reset", admin.reset, Guard.ADMIN)

# (method, path under a prefix, endpoint); order is Starlette's matching order.
_IMAGES: Final = (
    ("POST", "/images/upload", UPLOAD),
    ("POST", "/images/search", SEARCH),
    ("GET", "/images", LIST),
    ("GET", "/images/", LIST),
    ("GET", "/images/{image_id}", GET),
    ("DELETE", "/images/{image_id}", DELETE),
)
_ADMIN: Final = (
    ("GET", "/files/{image_id}", FILE),
    ("GET", "/images/{image_id}", IMAGE_DETAIL),
    ("POST", "/images/{image_id}/expire", EXPIRE),
    ("GET", "/stats", STATS),
    ("GET", "/upload-spans", UPLOAD_SPANS),
    ("GET", "/faults", GET_FAULTS),
    ("POST", "/faults", SET_FAULTS),
    ("POST", "/reset", RESET),
)


def _route(state: StandinState, method: str, path: str, endpoint: Endpoint) -> Route:
    route = Route(path, endpoint_function(state, endpoint), methods=[method], name=endpoint.name)
    route.methods = {method}  # Starlette adds HEAD to GET routes; Reka's FastAPI routes do not
    return route


def table(state: StandinState) -> list[Route]:
    """Every route of one server, its endpoints bound to `state`."""
    images = [
        (method, prefix + path, endpoint)
        for prefix in (API_PREFIX, LEGACY_PREFIX)
        for method, path, endpoint in _IMAGES
    ]
    admin_routes = [(method, ADMIN + path, endpoint) for method, path, endpoint in _ADMIN]
    return [_route(state, *row) for row in images + admin_routes]

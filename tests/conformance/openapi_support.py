"""Checking real traffic against Reka's OpenAPI document with openapi-core.

- `load_document()`: the shared reference copy when it is beside the repo,
  else the vendored one (kept equal to it by a test).
- `openapi_for(base_url)`: an `OpenAPI` that matches requests sent to a
  stand-in on loopback (see `_relocate` and `_fix_header_types` for the two
  edits, both of them about where and how we check, not about the API).
- `Recorder`: a transport wrapper that keeps every (request, response) pair
  with both bodies, so the test checks exactly what went over the wire.
- `as_openapi_request` / `as_openapi_response`: httpx -> openapi-core protocols.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCUMENT_NAME = "reka-vision-images.openapi.yaml"
SHARED_DOCUMENT = REPO_ROOT.parent / "shared" / "reference" / DOCUMENT_NAME
VENDORED_DOCUMENT = Path(__file__).resolve().parent / DOCUMENT_NAME


def document_path() -> Path:
    return SHARED_DOCUMENT if SHARED_DOCUMENT.is_file() else VENDORED_DOCUMENT


def load_document() -> dict[str, Any]:
    loaded = yaml.safe_load(document_path().read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def _relocate(document: dict[str, Any], base_url: str) -> None:
    """Point `servers` at the stand-in: the paths are the API's, only the host moves."""
    document["servers"] = [{"url": base_url}]


def _fix_header_types(document: dict[str, Any]) -> None:
    """`type: [string, 'null']` on a header parameter -> `type: string`.

    openapi-core 0.23 cannot deserialise a parameter whose type is a list (it
    fails with TypeError before validating anything). A header is never JSON
    null, so dropping 'null' changes nothing a request could send.
    """
    for operations in document["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                schema = parameter.get("schema", {})
                kinds = schema.get("type")
                if isinstance(kinds, list):
                    schema["type"] = next(kind for kind in kinds if kind != "null")


def openapi_for(base_url: str) -> OpenAPI:
    document = copy.deepcopy(load_document())
    _relocate(document, base_url)
    _fix_header_types(document)
    return OpenAPI.from_dict(document)


# --- httpx -> openapi-core -------------------------------------------------------------


class OpenApiRequest:
    """openapi-core's Request protocol over a read httpx.Request."""

    def __init__(self, request: httpx.Request) -> None:
        self._request = request
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(list(request.url.params.multi_items())),
            header=Headers(list(request.headers.multi_items())),
            cookie=ImmutableMultiDict(),
        )

    @property
    def host_url(self) -> str:
        url = self._request.url
        return f"{url.scheme}://{url.netloc.decode('ascii')}"

    @property
    def path(self) -> str:
        return self._request.url.path

    @property
    def method(self) -> str:
        return self._request.method.lower()

    @property
    def body(self) -> bytes | None:
        return self._request.content or None

    @property
    def content_type(self) -> str:
        return str(self._request.headers.get("content-type", "")).lower()


class OpenApiResponse:
    """openapi-core's Response protocol over a read httpx.Response."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    @property
    def status_code(self) -> int:
        return self._response.status_code

    @property
    def content_type(self) -> str:
        return str(self._response.headers.get("content-type", "")).lower()

    @property
    def headers(self) -> Headers:
        return Headers(list(self._response.headers.multi_items()))

    @property
    def data(self) -> bytes | None:
        return self._response.content


# --- recording the wire ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Exchange:
    request: httpx.Request
    response: httpx.Response


class Recorder(httpx.BaseTransport):
    """Wraps a real transport; keeps each request and response with their bodies read.

    Reading the request body first buffers an upload in memory: fine for the
    small files of a conformance test, and it means we check the bytes sent.
    """

    def __init__(self, inner: httpx.BaseTransport | None = None) -> None:
        self._inner = inner if inner is not None else httpx.HTTPTransport()
        self.exchanges: list[Exchange] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        response = self._inner.handle_request(request)
        response.read()
        self.exchanges.append(Exchange(request, response))
        return response

    def close(self) -> None:
        self._inner.close()

"""The upload's form, parsed as Reka's own (FastAPI) server parses it.

Two encodings are taken, as a FastAPI form endpoint takes them:
`multipart/form-data` (file parts named `images`, and a `metadata` field),
and `application/x-www-form-urlencoded`, which is what Reka's CLI (httpx)
sends for a URL upload: no files, only `metadata`, with the URLs inside it
(`image_urls`; reka_ingest.standin.fetch). Whether an upload has images at
all, from parts or URLs, is the handler's question
(reka_ingest.standin.api.upload); this module reads the form.

Starlette's `request.form()` runs python-multipart over the body as it
arrives, under the contract's limits (shared/reka-api.md): at most
`max_images_per_request` files, no more form fields than an upload has
parts (one per image, and `metadata`), and no part, field or body over
`max_request_bytes`. (Starlette's default part limit, 1 MB, would refuse
the `metadata` of a full batch with rich sidecars.) A file of up to 1 MB
stays in memory; a larger one spools to a temporary file, closed with the
form.

Over-limit and malformed bodies answer in Reka's envelope: too many files is
a 413 on `images`, the rest a 400 or 413 naming what is wrong. Starlette
reports each as an HTTP 400 carrying python-multipart's message, so the
message is what tells them apart (`_FORM_ERRORS`); one not listed there is
a 400 on `body`. Any other content type is a 400 on `content-type`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request

from reka_ingest.standin.bodies import bounded
from reka_ingest.standin.config import StandinConfig
from reka_ingest.standin.errors import ApiError, invalid, too_large
from reka_ingest.standin.metadata import PARAM as METADATA_PARAM

IMAGES_PARAM: Final = "images"
_MULTIPART: Final = "multipart/form-data"
_URLENCODED: Final = "application/x-www-form-urlencoded"


@dataclass(frozen=True, slots=True)
class ImagePart:
    """One image as received: an `images` part (the name and type the client
    declared), or the bytes fetched from one of `image_urls` (`source_url`; the
    name is the URL's last path segment, the type the one its server declared)."""

    filename: str | None
    content_type: str | None
    data: bytes
    source_url: str | None = None


@dataclass(frozen=True, slots=True)
class UploadForm:
    images: list[ImagePart]  # in input order; none in a URL upload
    metadata: str  # the `metadata` part, JSON still to be parsed


def _max_fields(config: StandinConfig) -> int:
    """One per image (a part without a filename is a field) and `metadata`."""
    return config.max_images_per_request + 1


# python-multipart's message (its start) -> the envelope it answers with.
_FORM_ERRORS: Final[dict[str, Callable[[StandinConfig], ApiError]]] = {
    "Too many files": lambda c: too_large(
        f"more than {c.max_images_per_request} files in one request; "
        f"at most {c.max_images_per_request} images",
        param=IMAGES_PARAM,
    ),
    "Too many fields": lambda c: invalid(
        f"more than {_max_fields(c)} form fields; an upload is its images (file parts) "
        f"and one `{METADATA_PARAM}` field",
        param="body",
    ),
    "Part exceeded maximum size": lambda c: too_large(
        f"a form field exceeds {c.max_request_bytes} bytes"
    ),
    "Field exceeded maximum size": lambda c: too_large(  # the urlencoded parser's words
        f"a form field exceeds {c.max_request_bytes} bytes"
    ),
    "Missing boundary": lambda c: invalid(
        "multipart Content-Type has no boundary", param="content-type"
    ),
    "Invalid multipart data": lambda c: invalid("malformed multipart body", param="body"),
    "The Content-Disposition header": lambda c: invalid(
        "multipart part without a name", param="body"
    ),
}


def _form_error(err: HTTPException, config: StandinConfig) -> ApiError:
    for start, make in _FORM_ERRORS.items():
        if err.detail.startswith(start):
            return make(config)
    return invalid(f"multipart body refused: {err.detail}", param="body")


def _check_content_type(request: Request) -> None:
    """400 on `content-type` unless it is one of the two form encodings.

    A multipart boundary is `form()`'s check.
    """
    kind = request.headers.get("content-type", "").partition(";")[0]
    if kind.strip(" \t").lower() not in {_MULTIPART, _URLENCODED}:
        raise invalid(
            f"upload must be {_MULTIPART} or {_URLENCODED} (with no files)", param="content-type"
        )


async def _image_parts(values: list[UploadFile | str], max_bytes: int) -> list[ImagePart]:
    for i, value in enumerate(values):
        param = f"{IMAGES_PARAM}[{i}]"
        if not isinstance(value, UploadFile):
            raise invalid(f"{param} must be a file part (with a filename)", param=param)
        size = value.size or 0
        if size > max_bytes:
            raise too_large(f"image {i} is {size} bytes; at most {max_bytes}", param=param)
    return [
        ImagePart(value.filename, value.content_type, await value.read())
        for value in values
        if isinstance(value, UploadFile)
    ]


async def read_upload(request: Request, config: StandinConfig) -> UploadForm:
    """The file parts (maybe none) and the metadata text of an upload, within the limits."""
    _check_content_type(request)
    limited = bounded(request, config.max_request_bytes)
    try:
        async with limited.form(
            max_files=config.max_images_per_request,
            max_fields=_max_fields(config),
            max_part_size=config.max_request_bytes,
        ) as form:
            images = await _image_parts(form.getlist(IMAGES_PARAM), config.max_image_bytes)
            metadata = form.get(METADATA_PARAM)
    except HTTPException as err:
        raise _form_error(err, config) from None
    if metadata is None:
        raise invalid("the `metadata` part is required", param=METADATA_PARAM)
    if not isinstance(metadata, str):
        raise invalid("`metadata` must be a form field, not a file", param=METADATA_PARAM)
    return UploadForm(images, metadata)

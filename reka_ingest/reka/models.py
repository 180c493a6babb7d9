"""The shapes the Reka Vision image API sends and takes, as pydantic models.

Response models mirror `shared/reference/reka-vision-images.openapi.yaml`: the
documented keys are required (a missing one means the answer is not what we
think it is), extra keys are kept (the real API may grow some without telling
us). Request-side types (`UploadItem`, `UrlItem`, `SearchMode`) are what our own code
hands the client; they are validated when built, so a bad one fails at the
caller, not halfway through a request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, JsonValue, PrivateAttr, field_validator

from reka_ingest.core.errors import RateLimitInfo

# `type/subtype` and nothing else: a CR or LF here would forge a multipart header.
_CONTENT_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*$")


_URL_SCHEMES = frozenset({"http", "https"})
_PRINTABLE = 0x20  # code points below are control characters


class ApiModel(BaseModel):  # noqa: PLW1641 - pydantic gives frozen models a field-based __hash__
    """Base of every response model: documented keys required, unknown keys kept.

    `request_id` is the `X-Request-ID` of the response the object came from
    (None when built by hand). It is not part of the API's data, so it is a
    private attribute, not a field, and never serialised.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    _request_id: str | None = PrivateAttr(default=None)

    @property
    def request_id(self) -> str | None:
        return self._request_id

    def __eq__(self, other: object) -> bool:
        # Same data is the same value, whichever response carried it: pydantic's
        # own __eq__ would also compare the private request id.
        if not isinstance(other, ApiModel):
            return NotImplemented
        return (
            type(self) is type(other)
            and self.__dict__ == other.__dict__
            and self.__pydantic_extra__ == other.__pydantic_extra__
        )


class Image(ApiModel):
    """An uploaded image, as upload, get and list return it (no metadata)."""

    image_id: str
    image_url: str
    indexing_status: int
    upload_timestamp: float


class DetectionMetadata(ApiModel):
    """One detected object in an image's SecurityMetadata."""

    class_name: str
    bounding_box: list[int]
    confidence: float | None = None
    is_license_plate: bool = False
    license_plate_number: str | None = None
    ncic_category: str | None = None


class SecurityMetadata(ApiModel):
    """An image's metadata: what search returns with each hit (every key may be
    null), and the schema a sidecar's documented keys are checked against
    (`scheduler.sidecar`)."""

    camera_id: str | None = None
    recorded_timestamp_utc: int | None = None
    video_clip_id: str | None = None
    org_id: str | None = None
    site_id: str | None = None
    event_id: str | None = None
    caption: str | None = None
    detection_metadata: list[DetectionMetadata] | None = None


class SearchResult(ApiModel):
    """One search hit, best first in the list search returns."""

    image_id: str
    image_url: str
    image_metadata: SecurityMetadata
    upload_timestamp: float
    score: float | None = None


class DeleteResult(ApiModel):
    """What delete answers: a status word and a sentence."""

    status: str
    message: str


class ImageList(ApiModel):
    """`{"results": [Image, ...]}`: the body of upload and list."""

    results: list[Image]


class SearchResultList(ApiModel):
    """`{"results": [SearchResult, ...]}`: the body of search."""

    results: list[SearchResult]


class SearchMode(StrEnum):
    """`search_mode` of a search: vision only, or vision and text joined."""

    VISION = "vision"
    JOINED = "joined"


class UploadItem(BaseModel):
    """One file to upload: where it is, what to call it, and its metadata.

    `metadata` must be JSON (checked here, so the multipart body can always be
    built); `index=False` uploads without indexing.
    """

    model_config = ConfigDict(frozen=True)

    path: Path
    filename: str = Field(min_length=1)
    content_type: str
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    index: bool = True

    @field_validator("content_type")
    @classmethod
    def _check_content_type(cls, value: str) -> str:
        if not _CONTENT_TYPE.match(value):
            raise ValueError("must be a MIME type such as image/jpeg")
        return value


class UrlItem(BaseModel):
    """One image to upload by URL: Reka fetches `url` itself (an http or https URL
    with a host), with `metadata` and `index` as for a file (`UploadItem`).

    Checked here, so a request is never built around a URL the API cannot fetch:
    the scheme and host only; whether it serves an image is the server's answer.
    """

    model_config = ConfigDict(frozen=True)

    url: str
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    index: bool = True

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if value != value.strip() or any(ch.isspace() or ord(ch) < _PRINTABLE for ch in value):
            raise ValueError("must not hold whitespace or control characters")
        try:
            parts = urlsplit(value)
            host, _ = parts.hostname, parts.port  # .port raises on a port that is not one
        except ValueError:
            raise ValueError("is not a valid URL") from None
        if parts.scheme.lower() not in _URL_SCHEMES or not host:
            raise ValueError("must be an http or https URL with a host")
        return value


@dataclass(frozen=True, slots=True)
class SentBytes:
    """What one file's part of an upload request carried: the sha256 (hex) and the
    length of the bytes read into the request, whatever the file held before."""

    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class UploadResult:
    """The answer to one upload request: one `Image` per item, in input order.

    `request_id` and `rate_limit` come from the response headers; the batch
    records the first, the shared upload budget follows the second. `sent` is
    what each item's part carried, in input order (empty when not measured, as
    in a result built by hand, or for a URL upload, which sends no bytes): the
    hash to record is the hash of the bytes sent.
    """

    images: list[Image]
    request_id: str | None
    rate_limit: RateLimitInfo = field(default_factory=RateLimitInfo)
    sent: list[SentBytes] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ContentDigest:
    """What an image URL served: the sha256 (hex) and the length of its bytes."""

    sha256: str
    size: int

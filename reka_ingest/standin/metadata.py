"""The upload's `metadata` part: parse it, check its shape, validate the known keys.

Shapes taken (shared/reka-api.md): Reka's worked example
`{"requests": [{"indexing_config": {"index": true}, "metadata": {...}}, ...]}`,
or a bare list of such entries (assumed). One entry per image, same order.
A URL upload (Reka's CLI) adds `"image_urls": ["https://...", ...]` next to
`requests`, one entry per URL: a list of strings (400 on `image_urls`, or on
`image_urls[i]` for an item that is not a string); `null` counts as absent.
What the URLs must be, and fetching them, is reka_ingest.standin.fetch.
An entry without `indexing_config` (or without its `index`) is indexed, and
one without `metadata` has none (assumed).

The keys Reka returns from search (SecurityMetadata) are type-checked: a
string `recorded_timestamp_utc` is a 400, as the real API's pydantic model
would make it. Other keys pass through untouched. Errors name the offending
field in `param`, e.g. `metadata[2].detection_metadata[0].bounding_box`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from reka_ingest.standin.errors import invalid

PARAM: Final = "metadata"
URLS_PARAM: Final = "image_urls"

STRING_KEYS: Final = ("camera_id", "video_clip_id", "org_id", "site_id", "event_id", "caption")
TIMESTAMP_KEY: Final = "recorded_timestamp_utc"
DETECTIONS_KEY: Final = "detection_metadata"
SECURITY_KEYS: Final = (
    "camera_id",
    "recorded_timestamp_utc",
    "video_clip_id",
    "org_id",
    "site_id",
    "event_id",
    "caption",
    "detection_metadata",
)


@dataclass(frozen=True, slots=True)
class UploadEntry:
    """One image's request entry: whether to index it, and its metadata."""

    index: bool
    metadata: dict[str, Any]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _check(value: Any, ok: Callable[[Any], bool], what: str, param: str, nullable: bool) -> None:
    if value is None and nullable:
        return
    if not ok(value):
        raise invalid(f"{param} must be {what}, got {type(value).__name__}", param=param)


def _detection(item: Any, param: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise invalid(f"{param} must be an object", param=param)
    for required in ("class_name", "bounding_box"):
        if required not in item:
            raise invalid(f"{param}.{required} is required", param=f"{param}.{required}")
    _check(item["class_name"], _is_str, "a string", f"{param}.class_name", nullable=False)
    box = item["bounding_box"]
    if not isinstance(box, list) or not all(_is_int(v) for v in box):
        raise invalid(f"{param}.bounding_box must be a list of integers", f"{param}.bounding_box")
    _check(item.get("confidence"), _is_number, "a number", f"{param}.confidence", nullable=True)
    _check(
        item.get("is_license_plate", False),
        _is_bool,
        "a boolean",
        f"{param}.is_license_plate",
        nullable=False,
    )
    for key in ("license_plate_number", "ncic_category"):
        _check(item.get(key), _is_str, "a string", f"{param}.{key}", nullable=True)
    return item


def validate_metadata(meta: Any, param: str) -> dict[str, Any]:
    """Type-check the SecurityMetadata keys of one image's metadata; others pass through."""
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise invalid(f"{param} must be an object", param=param)
    for key in STRING_KEYS:
        _check(meta.get(key), _is_str, "a string", f"{param}.{key}", nullable=True)
    _check(meta.get(TIMESTAMP_KEY), _is_int, "an integer", f"{param}.{TIMESTAMP_KEY}", True)
    detections = meta.get(DETECTIONS_KEY)
    if detections is not None:
        if not isinstance(detections, list):
            raise invalid(f"{param}.{DETECTIONS_KEY} must be a list", f"{param}.{DETECTIONS_KEY}")
        for i, item in enumerate(detections):
            _detection(item, f"{param}.{DETECTIONS_KEY}[{i}]")
    return meta


def _entry(raw: Any, i: int) -> UploadEntry:
    param = f"{PARAM}[{i}]"
    if not isinstance(raw, dict):
        raise invalid(f"{param} must be an object", param=param)
    config = raw.get("indexing_config")
    index = True
    if config is not None:
        if not isinstance(config, dict):
            raise invalid(f"{param}.indexing_config must be an object", f"{param}.indexing_config")
        index = config.get("index", True)
        _check(index, _is_bool, "a boolean", f"{param}.indexing_config.index", nullable=False)
    return UploadEntry(index=index, metadata=validate_metadata(raw.get("metadata"), param))


@dataclass(frozen=True, slots=True)
class UploadMetadata:
    """A parsed `metadata` part: the entries, and the image URLs of a URL upload."""

    entries: list[UploadEntry]
    image_urls: list[str] | None  # None: no `image_urls` (a file upload)


def _image_urls(raw: Any) -> list[str] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise invalid(f"{URLS_PARAM} must be a list of URLs", param=URLS_PARAM)
    for i, url in enumerate(raw):
        if not isinstance(url, str):
            param = f"{URLS_PARAM}[{i}]"
            raise invalid(f"{param} must be a string, got {type(url).__name__}", param=param)
    return raw


def parse_metadata(raw: str | bytes) -> UploadMetadata:
    """The validated entries and image URLs of a `metadata` part; 400 naming what is wrong."""
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise invalid(f"metadata is not valid JSON: {err}", param=PARAM) from None
    items = doc.get("requests") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise invalid('metadata must be {"requests": [...]} or a list of entries', param=PARAM)
    urls = _image_urls(doc.get(URLS_PARAM)) if isinstance(doc, dict) else None
    return UploadMetadata([_entry(item, i) for i, item in enumerate(items)], urls)


def parse_entries(raw: str | bytes) -> list[UploadEntry]:
    """The validated entries of a `metadata` part; 400 naming the field when wrong."""
    return parse_metadata(raw).entries


def security_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """The SecurityMetadata object search returns: every key present, null where empty."""
    out: dict[str, Any] = {key: meta.get(key) for key in SECURITY_KEYS}
    detections = out[DETECTIONS_KEY]
    if detections is not None:
        out[DETECTIONS_KEY] = [
            {
                "class_name": d["class_name"],
                "confidence": d.get("confidence"),
                "bounding_box": d["bounding_box"],
                "is_license_plate": d.get("is_license_plate", False),
                "license_plate_number": d.get("license_plate_number"),
                "ncic_category": d.get("ncic_category"),
            }
            for d in detections
        ]
    return out

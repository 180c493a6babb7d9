"""Sidecar metadata: finding, reading, merging over folder defaults, validating."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reka_ingest.core.errors import FileRejected
from reka_ingest.core.states import Reason
from scheduler.constants import MAX_SIDECAR_BYTES
from scheduler.sidecar import (
    DefaultsReader,
    find_sidecar,
    load,
    merge,
    parse_object,
    read_object,
)

GOOD = {
    "camera_id": "cam-7",
    "recorded_timestamp_utc": 1_700_000_000,
    "caption": "a red car",
    "detection_metadata": [
        {"class_name": "car", "bounding_box": [1, 2, 30, 40], "confidence": 0.9},
        {"class_name": "plate", "bounding_box": [5, 6, 7, 8], "is_license_plate": True},
    ],
    "site_key": {"nested": ["kept", "as", "is"]},
}


def write(path: Path, obj: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def rejected(call: object) -> str:
    with pytest.raises(FileRejected) as info:
        call()  # type: ignore[operator]
    assert info.value.reason == Reason.BAD_SIDECAR
    return info.value.message


def test_a_valid_sidecar_passes_through_untouched() -> None:
    meta = merge([("p.jpg.json", GOOD)])
    assert meta.index is True
    assert meta.metadata == GOOD  # no defaults injected, unknown keys kept


def test_string_timestamp_is_an_error_naming_the_field_and_file() -> None:
    bad = {**GOOD, "recorded_timestamp_utc": "1700000000"}
    message = rejected(lambda: merge([("p.jpg.json", bad)]))
    assert "recorded_timestamp_utc" in message
    assert "p.jpg.json" in message


@pytest.mark.parametrize(
    ("detection", "field"),
    [
        ({"bounding_box": [1, 2, 3, 4]}, "detection_metadata[0].class_name"),
        ({"class_name": "car"}, "detection_metadata[0].bounding_box"),
        ({"class_name": "car", "bounding_box": [1, "2"]}, "detection_metadata[0].bounding_box[1]"),
        ({"class_name": "car", "bounding_box": [1], "confidence": "high"}, "confidence"),
        ({"class_name": "car", "bounding_box": [1], "is_license_plate": 1}, "is_license_plate"),
    ],
)
def test_detections_are_checked_strictly(detection: dict[str, object], field: str) -> None:
    message = rejected(lambda: merge([("p.json", {"detection_metadata": [detection]})]))
    assert field in message


def test_integer_confidence_is_a_number() -> None:
    det = {"class_name": "car", "bounding_box": [1], "confidence": 1}
    assert merge([("p.json", {"detection_metadata": [det]})]).metadata is not None


def test_index_false_is_ours_and_not_sent_as_metadata() -> None:
    meta = merge([("p.json", {"index": False, "caption": "x"})])
    assert meta.index is False
    assert meta.metadata == {"caption": "x"}
    assert merge([("p.json", {"index": False})]).metadata is None
    assert "index" in rejected(lambda: merge([("p.json", {"index": "no"})]))


def test_defaults_merge_under_the_sidecar_and_deeper_defaults_win(tmp_path: Path) -> None:
    root = tmp_path / "inbox"
    write(root / "_defaults.json", {"org_id": "org", "site_id": "top", "index": False})
    write(root / "cam1" / "_defaults.json", {"site_id": "cam1-site", "camera_id": "cam1"})
    image = root / "cam1" / "p.jpg"
    image.write_bytes(b"x")
    side = write(root / "cam1" / "p.jpg.json", {"camera_id": "own", "caption": "c"})
    reader = DefaultsReader(str(root))
    meta = load(find_sidecar(str(image)), reader.layers("cam1"))
    assert meta.metadata == {
        "org_id": "org",
        "site_id": "cam1-site",
        "camera_id": "own",
        "caption": "c",
    }
    assert meta.index is False
    assert find_sidecar(str(image)) == str(side)


def test_a_bad_defaults_file_is_named(tmp_path: Path) -> None:
    root = tmp_path / "inbox"
    write(root / "cam1" / "_defaults.json", {"recorded_timestamp_utc": "yesterday"})
    reader = DefaultsReader(str(root))
    message = rejected(lambda: load(None, reader.layers("cam1")))
    assert os.path.join("cam1", "_defaults.json") in message
    # fixed on disk: read again at the next look (the cache follows size and mtime)
    write(root / "cam1" / "_defaults.json", {"recorded_timestamp_utc": 12})
    reader.new_look()
    assert load(None, reader.layers("cam1")).metadata == {"recorded_timestamp_utc": 12}


def test_name_json_is_the_fallback_sidecar(tmp_path: Path) -> None:
    image = tmp_path / "p.jpg"
    image.write_bytes(b"x")
    assert find_sidecar(str(image)) is None
    side = write(tmp_path / "p.json", {"caption": "c"})
    assert find_sidecar(str(image)) == str(side)
    exact = write(tmp_path / "p.jpg.json", {"caption": "exact"})
    assert find_sidecar(str(image)) == str(exact)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"{not json", "invalid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"caption": NaN}', "invalid JSON"),
        (b"\xff\xfe", "UTF-16 text; save it as UTF-8"),
        ('{"caption": "x"}'.encode("utf-16"), "UTF-16 text; save it as UTF-8"),
        (b"\xef\xbb\xbf\xef\xbb\xbf{}", "invalid JSON"),  # one BOM is skipped, not two
        (b"{} \xe9", "not UTF-8"),
    ],
)
def test_unreadable_sidecars(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "p.jpg.json"
    path.write_bytes(content)
    message = rejected(lambda: read_object(str(path)))
    assert expected in message
    assert "p.jpg.json" in message


def test_a_symlinked_sidecar_is_never_followed(tmp_path: Path) -> None:
    secret = write(tmp_path / "outside" / "secret.json", {"caption": "not yours"})
    link = tmp_path / "inbox" / "p.jpg.json"
    link.parent.mkdir()
    link.symlink_to(secret)
    assert "symbolic link" in rejected(lambda: read_object(str(link)))


def test_an_oversized_sidecar_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "p.jpg.json"
    path.write_text(json.dumps({"caption": "x" * (MAX_SIDECAR_BYTES + 1)}))
    assert "over the limit" in rejected(lambda: read_object(str(path)))


@settings(max_examples=60, deadline=None)
@given(
    obj=st.dictionaries(
        st.text(max_size=8),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=8),
            lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=4), kids),
            max_leaves=8,
        ),
        max_size=4,
    )
)
def test_a_utf8_byte_order_mark_is_skipped(obj: dict[str, object]) -> None:
    """A sidecar saved "UTF-8 with BOM" (Notepad, Excel) reads as the same object."""
    raw = json.dumps(obj, ensure_ascii=False).encode("utf-8")
    assert parse_object(b"\xef\xbb\xbf" + raw, "p.jpg.json") == parse_object(raw, "p.jpg.json")

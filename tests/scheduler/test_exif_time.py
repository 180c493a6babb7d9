"""The EXIF capture time (`reka_ingest.files.exif`) and where it stands in an
image's metadata: sidecar > `_defaults.json` > path > EXIF. Real JPEGs written by
Pillow with real EXIF blocks, some of them damaged on purpose."""

from __future__ import annotations

import hashlib
import io
import json
import struct
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from reka_ingest.core.settings import PathMismatch, load_settings
from reka_ingest.core.states import Origin, Reason
from reka_ingest.core.zones import parse_zone
from reka_ingest.files import exif
from reka_ingest.files.exif import capture_time, parse_capture_time, parse_offset
from reka_ingest.files.heif import ensure_registered
from reka_ingest.ledger.intake import NewFile
from scheduler import describe as describe_module
from scheduler.describe import MetadataRules, describe
from scheduler.path_metadata import FolderMetadata
from scheduler.sidecar import DefaultsReader
from tests.support.images import exif_jpeg_bytes, image_bytes, write_image

# 2026-11-27 14:03:11 read as UTC.
NOV_27_1403_UTC = int(datetime(2026, 11, 27, 14, 3, 11, tzinfo=UTC).timestamp())
HOUR = 3600


def jpeg_with_exif(
    path: Path, taken: str | None, offset: str | None = None, *, seed: int = 0
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(exif_jpeg_bytes(taken, offset, seed=seed))
    return path


def time_of(data: bytes, zone: tzinfo = UTC) -> int | None:
    return capture_time(io.BytesIO(data), zone)


# --- reading the block -------------------------------------------------------------


def test_without_an_offset_the_time_is_read_in_the_default_zone() -> None:
    data = exif_jpeg_bytes("2026:11:27 14:03:11")
    assert time_of(data) == NOV_27_1403_UTC
    assert time_of(data, parse_zone("+02:00")) == NOV_27_1403_UTC - 2 * HOUR
    assert time_of(data, parse_zone("-05:30")) == NOV_27_1403_UTC + 5 * HOUR + 30 * 60


def test_an_iana_zone_follows_its_summer_time() -> None:
    oslo = parse_zone("Europe/Oslo")
    winter = exif_jpeg_bytes("2026:11:27 14:03:11")  # CET, +01:00
    summer = exif_jpeg_bytes("2026:06:27 14:03:11")  # CEST, +02:00
    assert time_of(winter, oslo) == NOV_27_1403_UTC - HOUR
    june = int(datetime(2026, 6, 27, 12, 3, 11, tzinfo=UTC).timestamp())
    assert time_of(summer, oslo) == june


def test_the_cameras_own_offset_wins_over_the_setting() -> None:
    data = exif_jpeg_bytes("2026:11:27 14:03:11", "+05:00")
    assert time_of(data, parse_zone("Europe/Oslo")) == NOV_27_1403_UTC - 5 * HOUR
    assert time_of(exif_jpeg_bytes("2026:11:27 14:03:11", "-03:00")) == NOV_27_1403_UTC + 3 * HOUR


def test_a_bad_offset_falls_back_to_the_setting() -> None:
    data = exif_jpeg_bytes("2026:11:27 14:03:11", "+99:00")
    assert time_of(data, parse_zone("+01:00")) == NOV_27_1403_UTC - HOUR


def test_the_zone_setting_is_checked_at_start() -> None:
    assert load_settings(exif_timezone="Europe/Oslo").ingest.exif_timezone == "Europe/Oslo"
    assert load_settings(exif_timezone="+05:30").ingest.exif_timezone == "+05:30"
    with pytest.raises(Exception, match="INGEST_EXIF_TIMEZONE"):
        load_settings(exif_timezone="Mars/Olympus")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026:11:27 14:03:11", NOV_27_1403_UTC),
        ("2026:11:27 14:03:11\x00", NOV_27_1403_UTC),
        (" 2026:11:27 14:03:11 ", NOV_27_1403_UTC),
        ("2026-11-27T14:03:11", NOV_27_1403_UTC),
        ("0000:00:00 00:00:00", None),  # what cameras write for "unknown"
        ("    :  :     :  :  ", None),
        ("1000:01:01 00:00:00", None),  # before EARLIEST_YEAR: a placeholder
        ("2026:13:01 00:00:00", None),
        ("2026:02:30 00:00:00", None),
        ("2026:11:27 24:00:00", None),
        ("2026:11:27 14:03", None),
        ("2026:11:27 14:03:11.25", None),
        ("\u0662\u0660\u0662\u0666:11:27 14:03:11", None),  # digits, not ASCII ones
        ("", None),
        (b"2026:11:27 14:03:11", None),  # not text
        (20261127, None),
        (None, None),
    ],
)
def test_parse_capture_time(value: object, expected: int | None) -> None:
    assert parse_capture_time(value, UTC) == expected


def test_the_far_end_of_the_calendar_gives_no_time_rather_than_an_error() -> None:
    assert parse_capture_time("9999:12:31 23:59:59", parse_zone("-14:00")) is None
    assert parse_capture_time("9999:12:31 23:59:59", UTC) is not None


@pytest.mark.parametrize(
    ("value", "hours"),
    [("+02:00", 2), ("-0530", -5.5), ("Z", 0), ("+14:00", 14), ("+14:01", None), ("2", None)],
)
def test_parse_offset(value: str, hours: float | None) -> None:
    zone = parse_offset(value)
    if hours is None:
        assert zone is None
    else:
        assert zone is not None
        offset = zone.utcoffset(None)
        assert offset is not None and offset.total_seconds() == hours * HOUR


@given(st.text(max_size=40), st.text(max_size=12))
def test_any_date_text_never_raises(taken: str, offset: str) -> None:
    zone = parse_offset(offset) or UTC
    result = parse_capture_time(taken, zone)
    assert result is None or isinstance(result, int)


@given(st.text(alphabet="0123456789: -T+", min_size=15, max_size=22))
def test_date_like_text_never_raises_either(taken: str) -> None:
    for zone in (UTC, parse_zone("+14:00"), parse_zone("-14:00"), parse_zone("Europe/Oslo")):
        result = parse_capture_time(taken, zone)
        assert result is None or isinstance(result, int)


# --- damage never fails an image ------------------------------------------------------


def _app1(payload: bytes) -> bytes:
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def _with_app1(jpeg: bytes, payload: bytes) -> bytes:
    """`jpeg` with an APP1 segment holding `payload` right after SOI."""
    return jpeg[:2] + _app1(payload) + jpeg[2:]


def _damaged() -> dict[str, bytes]:
    good = exif_jpeg_bytes("2026:11:27 14:03:11", "+02:00")
    plain = image_bytes(3)
    start = good.index(b"Exif\x00\x00")
    return {
        "no exif": plain,
        "garbage app1": _with_app1(plain, b"Exif\x00\x00" + bytes(range(256)) * 3),
        "bad tiff header": _with_app1(plain, b"Exif\x00\x00XX\x2a\x00\x08\x00\x00\x00"),
        "ifd offset past the end": _with_app1(plain, b"Exif\x00\x00II\x2a\x00\xff\xff\xff\x7f"),
        "truncated after app1 header": good[: start + 12],
        "truncated in the middle": good[: len(good) // 2],
        "exif cut short": good[:start] + good[start : start + 40] + good[start + 90 :],
        "app1 length too long": plain[:2] + b"\xff\xe1\xff\xf0Exif\x00\x00II",
        "not an image": b"hello, world\n" * 10,
        "png without exif": image_bytes(4, fmt="PNG"),
    }


@pytest.mark.parametrize("case", list(_damaged()))
def test_a_damaged_or_missing_block_gives_no_time(case: str) -> None:
    assert time_of(_damaged()[case]) is None


@given(st.binary(max_size=600))
def test_any_bytes_in_app1_never_raise(payload: bytes) -> None:
    plain = image_bytes(5)
    for data in (_with_app1(plain, b"Exif\x00\x00" + payload), _with_app1(plain, payload)):
        result = time_of(data)
        assert result is None or isinstance(result, int)


@given(st.integers(min_value=0, max_value=2000), st.binary(min_size=1, max_size=8))
def test_overwriting_the_block_anywhere_never_raises(at: int, junk: bytes) -> None:
    good = bytearray(exif_jpeg_bytes("2026:11:27 14:03:11", "+02:00"))
    start = good.index(b"Exif\x00\x00")
    at = start + at % 200
    good[at : at + len(junk)] = junk
    result = time_of(bytes(good))
    assert result is None or isinstance(result, int)


def test_png_with_exif_before_its_pixels_is_read() -> None:
    block = Image.Exif()
    block[exif.EXIF_IFD] = {exif.DATE_TIME_ORIGINAL: "2026:11:27 14:03:11"}
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG", exif=block)
    assert time_of(buf.getvalue()) == NOV_27_1403_UTC


def test_a_heic_capture_time_is_read() -> None:
    """pillow-heif's opener is registered by the reader itself."""
    block = Image.Exif()
    block[exif.EXIF_IFD] = {
        exif.DATE_TIME_ORIGINAL: "2026:11:27 14:03:11",
        exif.OFFSET_TIME_ORIGINAL: "+02:00",
    }
    ensure_registered()  # to write one here (the reader registers it for itself)
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(buf, "HEIF", exif=block, quality=50)
    assert buf.getvalue()[4:12] == b"ftypheic"
    assert time_of(buf.getvalue()) == NOV_27_1403_UTC - 2 * HOUR


# --- in `describe`: the same descriptor, and the order of layers ---------------------------


def _describe(
    root: Path,
    rel: str,
    rules: MetadataRules | None = None,
    *,
    sidecar: Path | None = None,
    defaults: bool = True,
) -> NewFile:
    return describe(
        str(root / rel),
        rel_path=rel,
        source_root=str(root),
        origin=Origin.SCAN,
        seen_at=0.0,
        sidecar_path=None if sidecar is None else str(sidecar),
        defaults=DefaultsReader(str(root)) if defaults else None,
        max_image_bytes=10_000_000,
        rules=rules or MetadataRules(),
    )


def test_describe_hashes_the_whole_file_after_reading_its_exif(tmp_path: Path) -> None:
    path = jpeg_with_exif(tmp_path / "a.jpg", "2026:11:27 14:03:11", "+01:00")
    new = _describe(tmp_path, "a.jpg")
    assert new.reason is None
    assert new.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert new.sidecar == {"recorded_timestamp_utc": NOV_27_1403_UTC - HOUR}


def test_describe_reads_in_the_zone_of_its_rules(tmp_path: Path) -> None:
    jpeg_with_exif(tmp_path / "a.jpg", "2026:11:27 14:03:11")
    new = _describe(tmp_path, "a.jpg", MetadataRules(exif_zone=parse_zone("Europe/Oslo")))
    assert new.sidecar == {"recorded_timestamp_utc": NOV_27_1403_UTC - HOUR}


@pytest.mark.parametrize("case", list(_damaged()))
def test_damaged_exif_never_fails_the_image(tmp_path: Path, case: str) -> None:
    data = _damaged()[case]
    (tmp_path / "a.jpg").write_bytes(data)
    new = _describe(tmp_path, "a.jpg")
    assert new.reason is None, new.message
    assert new.sidecar is None
    assert new.sha256 == hashlib.sha256(data).hexdigest()


SITE_CAMERA = "{site_id}/{camera_id}/*"
DEEP = "lot-7/cam-3/2026-11-27"
RULES = MetadataRules(FolderMetadata.parse(SITE_CAMERA, PathMismatch.FAIL))


def _tree(tmp_path: Path) -> Path:
    jpeg_with_exif(tmp_path / DEEP / "a.jpg", "2026:11:27 14:03:11")
    return tmp_path


def _json(path: Path, obj: dict[str, Any]) -> Path:
    path.write_text(json.dumps(obj))
    return path


def test_with_nothing_else_the_path_and_exif_give_the_metadata(tmp_path: Path) -> None:
    new = _describe(_tree(tmp_path), f"{DEEP}/a.jpg", RULES)
    assert new.sidecar == {
        "recorded_timestamp_utc": NOV_27_1403_UTC,
        "site_id": "lot-7",
        "camera_id": "cam-3",
    }


def test_precedence_sidecar_over_defaults_over_path_over_exif(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    _json(root / "_defaults.json", {"camera_id": "from-root", "org_id": "acme", "caption": "r"})
    _json(root / "lot-7" / "_defaults.json", {"camera_id": "from-lot", "event_id": "e1"})
    _json(root / DEEP / "_defaults.json", {"recorded_timestamp_utc": 111, "caption": "deep"})
    side = _json(root / DEEP / "a.jpg.json", {"caption": "mine", "site_id": "from-sidecar"})
    new = _describe(root, f"{DEEP}/a.jpg", RULES, sidecar=side)
    assert new.reason is None, new.message
    assert new.sidecar == {
        "recorded_timestamp_utc": 111,  # a default beats EXIF
        "site_id": "from-sidecar",  # the sidecar beats the path
        "camera_id": "from-lot",  # a default beats the path; the deeper default wins
        "org_id": "acme",
        "caption": "mine",  # the sidecar beats every default
        "event_id": "e1",
    }


def test_the_sidecar_beats_exif_and_exif_is_then_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _tree(tmp_path)
    calls: list[int] = []
    real = exif.capture_time

    def counting(fh: Any, zone: tzinfo) -> int | None:
        calls.append(1)
        return real(fh, zone)

    monkeypatch.setattr(describe_module, "capture_time", counting)
    assert _describe(root, f"{DEEP}/a.jpg", RULES).sidecar is not None
    assert len(calls) == 1
    side = _json(root / DEEP / "a.jpg.json", {"recorded_timestamp_utc": 42})
    new = _describe(root, f"{DEEP}/a.jpg", RULES, sidecar=side)
    assert new.sidecar is not None and new.sidecar["recorded_timestamp_utc"] == 42
    nulled = _json(root / DEEP / "a.jpg.json", {"recorded_timestamp_utc": None})
    new = _describe(root, f"{DEEP}/a.jpg", RULES, sidecar=nulled)
    assert new.sidecar is not None and new.sidecar["recorded_timestamp_utc"] is None
    assert len(calls) == 1  # neither file with the key set had its EXIF parsed


def test_a_bad_time_in_a_default_fails_even_when_exif_has_a_good_one(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    _json(root / "_defaults.json", {"recorded_timestamp_utc": "2026-11-27"})
    new = _describe(root, f"{DEEP}/a.jpg", RULES)
    assert new.reason == Reason.BAD_SIDECAR
    assert "_defaults.json" in (new.message or "")


def test_a_path_mismatch_is_found_before_any_sidecar_is_read(tmp_path: Path) -> None:
    write_image(tmp_path / "lot-7" / "b.jpg", seed=9)
    (tmp_path / "lot-7" / "b.jpg.json").write_text("{not json")
    new = _describe(tmp_path, "lot-7/b.jpg", RULES, sidecar=tmp_path / "lot-7" / "b.jpg.json")
    assert new.reason == Reason.PATH_MISMATCH


# --- a JPEG with no EXIF block is not opened --------------------------------------------


def _xmp_then(jpeg: bytes) -> bytes:
    """`jpeg` with an XMP APP1 segment (not EXIF) before whatever it had."""
    return _with_app1(jpeg, b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta/>")


def _pillow_only(data: bytes) -> int | None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(exif, "jpeg_without_exif", lambda _fh: False)
        return time_of(data)


def test_a_jpeg_without_exif_is_known_without_pillow(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = image_bytes(6)
    commented = plain[:2] + b"\xff\xfe\x00\x07burst" + plain[2:]  # like the bench's burst
    for data in (plain, commented, _xmp_then(plain)):
        assert exif.jpeg_without_exif(io.BytesIO(data))
    with_exif = exif_jpeg_bytes("2026:11:27 14:03:11")
    for data in (with_exif, _xmp_then(with_exif), b"", b"\xff\xd8", image_bytes(4, fmt="PNG")):
        assert not exif.jpeg_without_exif(io.BytesIO(data))
    fh = io.BytesIO(b"xx" + plain)
    fh.seek(2)
    assert exif.jpeg_without_exif(fh)
    assert fh.tell() == 2  # put back where it stood

    def never(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("Pillow opened a JPEG with no EXIF block")

    monkeypatch.setattr(Image, "open", never)
    assert time_of(commented) is None


def test_an_exif_block_after_another_app1_is_still_read() -> None:
    assert time_of(_xmp_then(exif_jpeg_bytes("2026:11:27 14:03:11"))) == NOV_27_1403_UTC


@pytest.mark.parametrize("case", list(_damaged()))
def test_the_shortcut_agrees_with_pillow_on_damage(case: str) -> None:
    data = _damaged()[case]
    assert time_of(data) == _pillow_only(data)


@given(st.integers(min_value=0, max_value=2000), st.binary(min_size=1, max_size=8))
def test_the_shortcut_agrees_with_pillow_on_any_overwrite(at: int, junk: bytes) -> None:
    for source in (exif_jpeg_bytes("2026:11:27 14:03:11", "+02:00"), image_bytes(7)):
        data = bytearray(source)
        at = at % min(len(data), 400)
        data[at : at + len(junk)] = junk
        assert time_of(bytes(data)) == _pillow_only(bytes(data))

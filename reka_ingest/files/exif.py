"""An image's capture time from its EXIF block: `recorded_timestamp_utc` for images
whose sidecar and folder defaults set none.

The time is `DateTimeOriginal` (tag 0x9003 in the Exif IFD, 0x8769), a local
wall-clock time `YYYY:MM:DD HH:MM:SS`; its zone is `OffsetTimeOriginal` (0x9011,
`+01:00`) when the camera wrote one, else the zone the caller names
(INGEST_EXIF_TIMEZONE). The answer is whole seconds since the epoch, UTC.
Nothing else stands in for it: `DateTime` (0x0132) is when the file was last
changed, not when the picture was taken.

Pillow opens the image lazily: `Image.open` reads the headers (for a JPEG, the
markers up to the scan, the APP1 EXIF block among them) and no pixel is
decoded; HEIC/HEIF is read through pillow-heif's opener (registered here,
`reka_ingest.files.heif`), its container's EXIF item likewise. A PNG whose
EXIF is not before its pixels is not read further (Pillow would decode the
whole image to find it). Whatever is wrong with the block
(no EXIF, a damaged one, garbage in APP1, a date that is no date, year 0) gives
None and a debug line: a capture time is a nicety, never a reason to fail an image.
"""

from __future__ import annotations

import os
import re
import warnings
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import IO, Final

from PIL import Image

from reka_ingest.core.logs import get_logger
from reka_ingest.files.heif import ensure_registered

log = get_logger(__name__)

EXIF_IFD: Final = 0x8769
DATE_TIME_ORIGINAL: Final = 0x9003
OFFSET_TIME_ORIGINAL: Final = 0x9011
# Formats that carry EXIF (those Pillow has an opener for); no other plugin is tried.
# JPEG's opener also gives MPO (multi-picture JPEG); HEIF is pillow-heif's opener
# (`reka_ingest.files.heif`), AVIF Pillow's own.
EXIF_FORMATS: Final = ("JPEG", "TIFF", "WEBP", "PNG", "HEIF", "AVIF")
# A JPEG's headers, as far as `jpeg_without_exif` walks them: Pillow reads EXIF only
# from an APP1 segment opening with the tag, before the scan (SOS) starts.
JPEG_SOI: Final = b"\xff\xd8"
APP1: Final = 0xE1
EXIF_APP1_TAG: Final = b"Exif\x00\x00"
JPEG_END_OF_HEADERS: Final = (0xDA, 0xD9)  # start of scan, end of image
MAX_JPEG_SEGMENTS: Final = 64  # more before the scan: Pillow reads them
# A capture time before this year is a placeholder (`0000:00:00`, `1000:01:01`), not a time.
EARLIEST_YEAR: Final = 1900

_DATE: Final = re.compile(
    r"(?P<y>\d{4})[:-](?P<mo>\d{2})[:-](?P<d>\d{2})[ T](?P<h>\d{2}):(?P<mi>\d{2}):(?P<s>\d{2})",
    re.ASCII,
)
_OFFSET: Final = re.compile(r"(?P<sign>[+-])(?P<h>\d{2}):?(?P<m>\d{2})", re.ASCII)
_MAX_OFFSET: Final = timedelta(hours=14)


def parse_offset(value: object) -> tzinfo | None:
    """An `OffsetTimeOriginal` value (`+01:00`, `-0530`, `Z`) as a zone; None if it is none."""
    if not isinstance(value, str):
        return None
    text = value.strip("\x00 \t")
    if text.upper() == "Z":
        return UTC
    found = _OFFSET.fullmatch(text)
    if found is None:
        return None
    delta = timedelta(hours=int(found["h"]), minutes=int(found["m"]))
    if delta > _MAX_OFFSET or int(found["m"]) > 59:
        return None
    return timezone(-delta if found["sign"] == "-" else delta)


def parse_capture_time(value: object, zone: tzinfo) -> int | None:
    """A `DateTimeOriginal` value read in `zone`, as whole seconds UTC; None if it is no time."""
    if not isinstance(value, str):
        return None
    found = _DATE.fullmatch(value.strip("\x00 \t"))
    if found is None:
        return None
    try:
        moment = datetime(
            int(found["y"]),
            int(found["mo"]),
            int(found["d"]),
            int(found["h"]),
            int(found["mi"]),
            int(found["s"]),
            tzinfo=zone,
        )
        if moment.year < EARLIEST_YEAR:
            return None
        return int(moment.astimezone(UTC).timestamp())
    except (ValueError, OverflowError):  # month 13, year 0, 9999-12-31 pushed past the range
        return None


def _formats() -> tuple[str, ...]:
    ensure_registered()  # HEIC/HEIF: what phones write
    Image.init()  # every opener Pillow has (once per process; then it returns at once)
    return tuple(f for f in EXIF_FORMATS if f in Image.OPEN)


def jpeg_without_exif(fh: IO[bytes]) -> bool:
    """Whether `fh` (from where it stands) is a JPEG with no `Exif` APP1 segment
    before its scan, which is the only place Pillow looks for one: such a file has
    no capture time, and Pillow need not open it (a burst of exported images, EXIF
    stripped, spent more in `Image.open` than in hashing). False when it has one,
    and whenever its markers are anything but plain (Pillow decides then).
    `fh` is put back where it stood."""
    try:
        start = fh.tell()
    except (OSError, ValueError):  # not seekable: Pillow copies it
        return False
    try:
        return fh.read(len(JPEG_SOI)) == JPEG_SOI and _no_exif_segment(fh)
    finally:
        fh.seek(start)


def _no_exif_segment(fh: IO[bytes]) -> bool:
    """Walk a JPEG's segments from after its SOI: True at its scan with no Exif APP1 seen."""
    for _ in range(MAX_JPEG_SEGMENTS):
        head = fh.read(4)
        if len(head) >= 2 and head[0] == 0xFF and head[1] in JPEG_END_OF_HEADERS:
            return True
        length = _payload_length(head)
        if length is None:
            return False
        if head[1] == APP1:
            tag = fh.read(len(EXIF_APP1_TAG))
            if tag == EXIF_APP1_TAG or len(tag) < min(length, len(EXIF_APP1_TAG)):
                return False
            length -= len(tag)
        fh.seek(length, os.SEEK_CUR)
    return False


def _payload_length(head: bytes) -> int | None:
    """A plain segment's payload length from its marker and length bytes; None for
    padding, a marker with no length, a short read or junk."""
    if len(head) < 4 or head[0] != 0xFF:
        return None
    if not 0xC0 <= head[1] <= 0xFE or 0xD0 <= head[1] <= 0xD9:
        return None
    length = int.from_bytes(head[2:4], "big") - 2
    return length if length >= 0 else None


def capture_time(fh: IO[bytes], default_zone: tzinfo) -> int | None:
    """The capture time of the image open as `fh` (read from where it stands), or None.

    `fh` is left wherever Pillow left it: seek it back before reading it again.
    """
    if jpeg_without_exif(fh):
        return None
    # Pillow warns (UserWarning) about each damaged tag it skips: for us that is a
    # debug line, not a message on stderr.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with Image.open(fh, formats=_formats()) as im:
                if im.format == "PNG" and "exif" not in im.info:
                    return None  # no EXIF before the pixels; finding it after means decoding
                ifd = im.getexif().get_ifd(EXIF_IFD)
                taken = ifd.get(DATE_TIME_ORIGINAL)
                offset = ifd.get(OFFSET_TIME_ORIGINAL)
        except Exception as err:  # noqa: BLE001 - any damage in a foreign block means "no time"
            log.debug("exif.unreadable", error=f"{type(err).__name__}: {err}"[:200])
            return None
        finally:
            if caught:
                log.debug("exif.damaged", warnings=[str(w.message)[:100] for w in caught[:5]])
    if taken is None:
        return None
    zone = parse_offset(offset) or default_zone
    seconds = parse_capture_time(taken, zone)
    if seconds is None:
        log.debug("exif.bad_time", value=repr(taken)[:80], offset=repr(offset)[:40])
    return seconds

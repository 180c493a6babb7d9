"""Tell an image from other bytes by its first bytes (magic numbers).

Cheap on purpose: the stand-in checks every uploaded part and must keep up
with hundreds of requests a second, so it reads a dozen bytes instead of
decoding the image. Names match `reka_ingest.core.constants.CONTENT_TYPES`.
"""

from __future__ import annotations

from typing import Final

from reka_ingest.core.constants import CONTENT_TYPES

_JPEG: Final = b"\xff\xd8\xff"
_PNG: Final = b"\x89PNG\r\n\x1a\n"
_GIF: Final = (b"GIF87a", b"GIF89a")
_RIFF: Final = b"RIFF"
_WEBP: Final = b"WEBP"
_WEBP_TAG_OFFSET: Final = 8
_BMP: Final = b"BM"
_TIFF: Final = (b"II*\x00", b"MM\x00*")
_BMP_MIN_BYTES: Final = 26  # file header + the smallest DIB header


def sniff_format(data: bytes) -> str | None:  # noqa: PLR0911 - one return per format reads best
    """The image format ("JPEG", "PNG", ...) or None when the bytes are not an image."""
    if data.startswith(_JPEG):
        return "JPEG"
    if data.startswith(_PNG):
        return "PNG"
    if data.startswith(_GIF):
        return "GIF"
    if data.startswith(_RIFF) and data[_WEBP_TAG_OFFSET : _WEBP_TAG_OFFSET + 4] == _WEBP:
        return "WEBP"
    if data.startswith(_TIFF):
        return "TIFF"
    # "BM" alone is two common ASCII letters; also require a plausible header size.
    if data.startswith(_BMP) and len(data) >= _BMP_MIN_BYTES:
        return "BMP"
    return None


def sniff_content_type(data: bytes) -> str | None:
    """The content type to serve the bytes with, or None when they are not an image."""
    fmt = sniff_format(data)
    return CONTENT_TYPES[fmt] if fmt is not None else None

"""Real, deterministic image files for tests (JPEG and PNG with noise, so they
neither compress to nothing nor repeat each other's bytes)."""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

from PIL import Image

from reka_ingest.files.exif import DATE_TIME_ORIGINAL, EXIF_IFD, OFFSET_TIME_ORIGINAL


def image_bytes(seed: int, *, fmt: str = "JPEG", size: tuple[int, int] = (64, 48)) -> bytes:
    rng = random.Random(seed)
    img = Image.new("RGB", size)
    img.putdata(
        [
            (rng.randrange(256), rng.randrange(256), rng.randrange(256))
            for _ in range(size[0] * size[1])
        ]
    )
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 85} if fmt == "JPEG" else {}))
    return buf.getvalue()


def write_image(
    path: Path, seed: int, *, fmt: str | None = None, size: tuple[int, int] = (64, 48)
) -> Path:
    fmt = fmt or ("PNG" if path.suffix.lower() == ".png" else "JPEG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes(seed, fmt=fmt, size=size))
    return path


def exif_jpeg_bytes(taken: str | None, offset: str | None = None, *, seed: int = 0) -> bytes:
    """A small JPEG whose Exif IFD holds `DateTimeOriginal` (and `OffsetTimeOriginal`)."""
    img = Image.new("RGB", (32, 24), (seed % 256, 40, 90))
    block = Image.Exif()
    block[0x010F] = "reka-ingest tests"  # Make, in IFD0
    sub: dict[int, Any] = {}
    if taken is not None:
        sub[DATE_TIME_ORIGINAL] = taken
    if offset is not None:
        sub[OFFSET_TIME_ORIGINAL] = offset
    if sub:
        block[EXIF_IFD] = sub
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=block, quality=80)
    return buf.getvalue()

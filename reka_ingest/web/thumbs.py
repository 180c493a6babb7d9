"""Thumbnails of files the ledger knows, looked up by row id.

The request names a row id, never a path: the bytes come from that row's
`final_path` (its failed/ copy beside the reason file, or its done/ copy) or
its `work_path`, opened without following a symbolic link, only when they are
a regular file no larger than INGEST_MAX_IMAGE_BYTES. Pillow reads the header
first; an image over MAX_PIXELS is not decoded (a decompression bomb), and
only common still formats are tried. Anything else gives no thumbnail, and the
page shows a placeholder.
"""

from __future__ import annotations

import io
import os
import stat
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass

from PIL import Image, ImageOps

from reka_ingest.files.outbox import ERROR_SUFFIX

THUMB_PX = 160
THUMB_QUALITY = 80
MAX_PIXELS = 40_000_000  # larger images are not decoded for a thumbnail
FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")
CACHE_ENTRIES = 256
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class Thumb:
    body: bytes  # JPEG
    etag: str  # names the file's version (inode, size, mtime)


def candidates(final_path: str | None, work_path: str | None) -> list[str]:
    """Where a row's bytes may be, most likely first (as `retry` looks for them)."""
    out = []
    if final_path:
        out.append(
            final_path[: -len(ERROR_SUFFIX)] if final_path.endswith(ERROR_SUFFIX) else final_path
        )
    if work_path and work_path not in out:
        out.append(work_path)
    return out


def _version(st: os.stat_result) -> str:
    return f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"'


def _open(path: str, max_bytes: int) -> tuple[int, str] | None:
    """An open descriptor of a regular file at `path` (never through a symlink) of at
    most `max_bytes`, and its version tag; None otherwise."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        return None
    if not stat.S_ISREG(st.st_mode) or not 0 < st.st_size <= max_bytes:
        os.close(fd)
        return None
    return fd, _version(st)


def _read(fd: int, max_bytes: int) -> bytes | None:
    """At most `max_bytes` from `fd` (closed after); None when more, or unreadable."""
    try:
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError:
        return None
    return data if len(data) <= max_bytes else None


def render(data: bytes) -> bytes | None:
    """A THUMB_PX JPEG of the image in `data`; None when it is not one we decode."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=FORMATS) as img:
                width, height = img.size
                if width <= 0 or height <= 0 or width * height > MAX_PIXELS:
                    return None
                img.draft("RGB", (THUMB_PX * 2, THUMB_PX * 2))  # JPEG: decode at a smaller scale
                frame = ImageOps.exif_transpose(img)
                frame.thumbnail((THUMB_PX, THUMB_PX))
                if frame.mode in ("RGBA", "LA", "P", "PA"):
                    rgba = frame.convert("RGBA")
                    flat = Image.new("RGB", rgba.size, (255, 255, 255))
                    flat.paste(rgba, mask=rgba.getchannel("A"))
                    frame = flat
                elif frame.mode != "RGB":
                    frame = frame.convert("RGB")
                out = io.BytesIO()
                frame.save(out, "JPEG", quality=THUMB_QUALITY)
                return out.getvalue()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Warning):
        # Pillow's ways of saying "not an image it can read" (SyntaxError from some
        # plugins' header parsers); one bad file gives a placeholder, nothing more.
        return None


class Thumbnails:
    """Thumbnails by row, with a small in-memory cache keyed by the file's version."""

    def __init__(self, *, max_bytes: int, entries: int = CACHE_ENTRIES) -> None:
        self.max_bytes = max_bytes
        self.entries = entries
        self._cache: OrderedDict[tuple[int, str], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def for_row(self, file_id: int, paths: list[str]) -> Thumb | None:
        """The thumbnail of the first of `paths` that is a regular file; None when none
        is, or it is not an image (the caller shows a placeholder)."""
        for path in paths:
            opened = _open(path, self.max_bytes)
            if opened is None:
                continue
            fd, etag = opened
            key = (file_id, etag)
            with self._lock:
                cached = self._cache.get(key)
                if cached is not None:
                    self._cache.move_to_end(key)
            if cached is not None:
                os.close(fd)
                return Thumb(cached, etag)
            data = _read(fd, self.max_bytes)
            body = render(data) if data is not None else None
            if body is None:
                return None
            with self._lock:
                self._cache[key] = body
                while len(self._cache) > self.entries:
                    self._cache.popitem(last=False)
            return Thumb(body, etag)
        return None

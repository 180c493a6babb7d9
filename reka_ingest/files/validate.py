"""Checks a file must pass before its bytes are sent: there, readable, not
empty, within the size limit, really an image, whole, of a format the API takes
or one converted to JPEG before upload (HEIC/HEIF, AVIF: `reka_ingest.files.convert`).

Each failure is a `FileRejected` with its own reason code, so the ledger and
the reason file say exactly what is wrong.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError

from reka_ingest.core.constants import CONTENT_TYPES
from reka_ingest.core.errors import FileRejected
from reka_ingest.core.states import Reason
from reka_ingest.files.convert import CONVERTIBLE, container_format
from reka_ingest.files.heif import ensure_registered

# A draft decode at 1/8 scale still walks the whole entropy-coded stream (so it
# finds truncation) at a fraction of the cost of a full decode.
_DRAFT_SCALE = 8
# A JPEG written to its end finishes with the End Of Image marker. Checking for it
# does what the decode above is for (a truncated file raises there) at a small
# fraction of its cost, so a whole JPEG is not decoded at all. Files without it
# still get the decode, so trailing data after the marker, or a damaged end, is
# judged by the decoder.
_JPEG_EOI = b"\xff\xd9"


def check_image(path: Path, *, max_bytes: int, decode_convertible: bool = True) -> str:
    """Return the file's content type, or raise `FileRejected` saying why not.

    HEIC/HEIF and AVIF give their own content type (`image/heif`, `image/avif`):
    `reka_ingest.files.convert.is_convertible` tells them apart. They are decoded
    whole like the others unless `decode_convertible` is False: the uploader
    converts them, which decodes them anyway (a damaged one fails there, with
    `conversion_failed`), so it reads only their header here.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise FileRejected(Reason.FILE_MISSING, "the file disappeared before upload") from None
    except OSError as err:
        raise FileRejected(Reason.UNREADABLE, f"cannot stat the file: {err.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise FileRejected(Reason.REFUSED_PATH, "symbolic links are never followed")
    if not stat.S_ISREG(st.st_mode):
        raise FileRejected(Reason.NOT_AN_IMAGE, "not a regular file")
    if st.st_size == 0:
        raise FileRejected(Reason.EMPTY_FILE, "the file is empty (0 bytes)")
    if st.st_size > max_bytes:
        raise FileRejected(
            Reason.TOO_LARGE,
            f"{st.st_size} bytes is over the limit of {max_bytes} bytes (INGEST_MAX_IMAGE_BYTES)",
        )
    try:
        with path.open("rb") as fh:
            return _sniff(fh, decode_convertible=decode_convertible)
    except FileNotFoundError:
        raise FileRejected(Reason.FILE_MISSING, "the file disappeared before upload") from None
    except PermissionError as err:
        raise FileRejected(Reason.UNREADABLE, f"cannot read the file: {err.strerror}") from None


def _sniff(fh: BinaryIO, *, decode_convertible: bool) -> str:
    ensure_registered()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fh) as im:
                fmt = im.format or ""
                if fmt in CONVERTIBLE:
                    if decode_convertible:
                        im.load()
                    return CONVERTIBLE[fmt]
                if fmt not in CONTENT_TYPES:
                    raise FileRejected(
                        Reason.UNSUPPORTED_FORMAT,
                        f"{fmt or 'this'} images are not taken by the API "
                        f"(taken: {', '.join(sorted(CONTENT_TYPES))};"
                        f" converted to JPEG: {', '.join(sorted(CONVERTIBLE))})",
                    )
                if fmt == "JPEG":
                    if _ends_with(fh, _JPEG_EOI):
                        return CONTENT_TYPES[fmt]
                    im.draft(
                        "RGB", (max(1, im.width // _DRAFT_SCALE), max(1, im.height // _DRAFT_SCALE))
                    )
                im.load()
                return CONTENT_TYPES[fmt]
    except FileRejected:
        raise
    except UnidentifiedImageError:
        damaged = _container(fh)
        if damaged is not None:  # a HEIF/AVIF header no decoder can open: not just any bytes
            raise FileRejected(
                Reason.TRUNCATED_IMAGE, f"the {damaged} image data is damaged: it cannot be opened"
            ) from None
        raise FileRejected(Reason.NOT_AN_IMAGE, "the content is not an image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise FileRejected(Reason.TOO_LARGE, f"too many pixels: {err}") from None
    except (OSError, SyntaxError, ValueError) as err:
        # Pillow raises OSError("image file is truncated ...") and friends for damaged data.
        raise FileRejected(
            Reason.TRUNCATED_IMAGE, f"the image data is damaged: {str(err).strip()}"
        ) from None
    except Exception as err:  # noqa: BLE001 - a decoder's own bug on crafted data: damaged data
        raise FileRejected(
            Reason.TRUNCATED_IMAGE,
            f"the image data is damaged (the decoder failed: {type(err).__name__}: {err})",
        ) from None


def _container(fh: BinaryIO) -> str | None:
    """The convertible container (HEIF, AVIF) the file's header names, if any."""
    try:
        fh.seek(0)
        return container_format(fh.read(12))
    except OSError:
        return None


def _ends_with(fh: BinaryIO, marker: bytes) -> bool:
    """Whether the open file's last bytes are `marker` (its position is restored)."""
    position = fh.tell()
    try:
        fh.seek(-len(marker), os.SEEK_END)
        return fh.read(len(marker)) == marker
    except OSError:
        return False
    finally:
        fh.seek(position)

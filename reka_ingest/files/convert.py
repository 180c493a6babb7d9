"""HEIC/HEIF and AVIF, which the API does not take, made into JPEG for the upload.

The original stays the file: its bytes are what `done/` keeps and what the
ledger's sha256 means. The JPEG is a temporary file sent in its place, as
`NAME.jpg` with `image/jpeg`:

- the original is read once (bounded by INGEST_MAX_IMAGE_BYTES), hashed, and
  decoded from those same bytes, so `Converted.original_sha256` says exactly
  which bytes the JPEG was made from (the uploader compares it with the claim's
  hash: a file rewritten after its claim is still noticed);
- EXIF orientation applied (`ImageOps.exif_transpose`), then RGB (transparency
  laid on white), quality INGEST_CONVERT_QUALITY; the EXIF block kept without
  its orientation when it fits a JPEG marker, the ICC profile kept;
- Pillow's decompression-bomb limit holds (its warning is an error here, as in
  `reka_ingest.files.validate`);
- any failure is a `FileRejected` with reason `conversion_failed` (or the
  reason `check_image` would give: missing, unreadable, too large), so the
  file fails alone and its batch goes on.

Where the JPEGs live: `<data dir>/convert/`, outside the work area (the
watcher's recovery takes every file in a claim folder for a claimed image, and
a backfill's files sit in the user's own tree). Each is named
`reka-convert-<pid>-<random>.jpg`. A batch's `Conversions` removes its files
whatever happens to the batch; files left by a killed worker are swept by the
next batch that converts anything, once older than `stale_after` (longer than
any run may hold a batch, so a file still being sent is never taken).
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from PIL import Image, ImageOps, UnidentifiedImageError

from reka_ingest.core.errors import FileRejected
from reka_ingest.core.logs import get_logger
from reka_ingest.core.states import Reason
from reka_ingest.files.heif import ensure_registered

log = get_logger(__name__)

# Formats the API does not take but we convert, by the name Pillow (or pillow-heif)
# gives them, with the content type `check_image` reports for them.
CONVERTIBLE: Final[dict[str, str]] = {"HEIF": "image/heif", "AVIF": "image/avif"}
TARGET_FORMAT: Final = "JPEG"
TARGET_CONTENT_TYPE: Final = "image/jpeg"
TARGET_SUFFIX: Final = ".jpg"
# The folder below the data dir, and the name every temporary JPEG starts with.
FOLDER: Final = "convert"
TEMP_PREFIX: Final = "reka-convert-"
# A temporary JPEG older than this is a killed worker's leftover, whatever the lease.
MIN_STALE_AFTER: Final = 3600.0
# The most EXIF bytes a JPEG APP1 marker holds (Pillow refuses more).
_MAX_JPEG_EXIF: Final = 65533
_ORIENTATION: Final = 0x0112
_WHITE: Final = (255, 255, 255)
# ISOBMFF `ftyp` major brands of still HEIF (HEVC or generic) and AVIF images.
_HEIF_BRANDS: Final = frozenset({b"heic", b"heix", b"heim", b"heis", b"mif1"})
_AVIF_BRANDS: Final = frozenset({b"avif"})
_BRAND_SLICE: Final = slice(8, 12)
_FTYP_SLICE: Final = slice(4, 8)


def is_convertible(content_type: str) -> bool:
    """Whether `check_image`'s content type is one converted before upload."""
    return content_type in CONVERTIBLE.values()


def container_format(head: bytes) -> str | None:
    """ "HEIF" or "AVIF" when the file's first 12 bytes name that container, else None:
    to say "damaged HEIF" of a file whose header no decoder can open."""
    if head[_FTYP_SLICE] != b"ftyp":
        return None
    brand = head[_BRAND_SLICE]
    if brand in _AVIF_BRANDS:
        return "AVIF"
    return "HEIF" if brand in _HEIF_BRANDS else None


def jpeg_name(name: str) -> str:
    """The name the JPEG is sent under: `IMG_1.HEIC` -> `IMG_1.jpg`."""
    stem, _ = os.path.splitext(name)
    return (stem or name) + TARGET_SUFFIX


@dataclass(frozen=True, slots=True)
class Converted:
    """A JPEG made from one original, and what the original was when it was read."""

    path: Path  # the temporary JPEG
    filename: str  # the name to send it under
    source_format: str  # "HEIF", "AVIF"
    quality: int
    original_sha256: str
    original_size: int

    @property
    def content_type(self) -> str:
        return TARGET_CONTENT_TYPE

    @property
    def description(self) -> str:
        """What the ledger records: `HEIF -> JPEG (quality 90)`."""
        return f"{self.source_format} -> {TARGET_FORMAT} (quality {self.quality})"


def to_jpeg(src: Path, folder: Path, *, name: str, quality: int, max_bytes: int) -> Converted:
    """Convert `src` to a new temporary JPEG in `folder` (the caller removes it)."""
    data = _read(src, max_bytes)
    image, source_format, exif, icc = _decode(data)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=TARGET_SUFFIX, dir=folder
    )
    written = False
    try:
        with os.fdopen(fd, "wb") as fh:
            options: dict[str, Any] = {"quality": quality}
            if exif:
                options["exif"] = exif
            if icc:
                options["icc_profile"] = icc
            image.save(fh, format=TARGET_FORMAT, **options)
        written = True
    except OSError as err:
        raise FileRejected(
            Reason.CONVERSION_FAILED, f"cannot write the converted JPEG: {err.strerror or err}"
        ) from None
    except Exception as err:  # noqa: BLE001 - an encoder error is this file's alone
        raise FileRejected(
            Reason.CONVERSION_FAILED, f"cannot encode the JPEG: {type(err).__name__}: {err}"
        ) from None
    finally:
        image.close()
        if not written:
            _remove(Path(tmp))
    return Converted(
        path=Path(tmp),
        filename=jpeg_name(name),
        source_format=source_format,
        quality=quality,
        original_sha256=hashlib.sha256(data).hexdigest(),
        original_size=len(data),
    )


def _read(src: Path, max_bytes: int) -> bytes:
    """The original's bytes, all of them (at most `max_bytes`), or why not."""
    try:
        with src.open("rb") as fh:
            data = fh.read(max_bytes + 1)
    except FileNotFoundError:
        raise FileRejected(Reason.FILE_MISSING, "the file disappeared before upload") from None
    except OSError as err:
        raise FileRejected(
            Reason.UNREADABLE, f"cannot read the file: {err.strerror or err}"
        ) from None
    if len(data) > max_bytes:
        raise FileRejected(
            Reason.TOO_LARGE,
            f"over the limit of {max_bytes} bytes (INGEST_MAX_IMAGE_BYTES)",
        )
    return data


def _decode(data: bytes) -> tuple[Image.Image, str, bytes | None, bytes | None]:
    """The picture upright and in RGB, its source format, its EXIF without the
    orientation (None when there is none or it cannot be kept), its ICC profile."""
    ensure_registered()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                fmt = im.format or "unknown"
                if fmt not in CONVERTIBLE:
                    raise FileRejected(
                        Reason.CONVERSION_FAILED,
                        f"expected HEIF or AVIF, found {fmt} (the file changed after its check)",
                    )
                im.load()
                icc = im.info.get("icc_profile")
                upright = _upright(im)
        exif = _exif_without_orientation(upright)
        rgb = _rgb(upright)
    except FileRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise FileRejected(Reason.CONVERSION_FAILED, f"too many pixels to convert: {err}") from None
    except UnidentifiedImageError:
        fmt = container_format(data[:12]) or "HEIF or AVIF"
        raise FileRejected(
            Reason.CONVERSION_FAILED, f"the {fmt} data is damaged: no decoder can open it"
        ) from None
    except MemoryError:
        raise FileRejected(
            Reason.CONVERSION_FAILED, "not enough memory to decode the image"
        ) from None
    except Exception as err:  # noqa: BLE001 - any decoder error on this file's data is its own
        raise FileRejected(
            Reason.CONVERSION_FAILED,
            f"the image data is damaged and cannot be converted to JPEG"
            f" ({type(err).__name__}: {str(err).strip()})",
        ) from None
    return rgb, fmt, exif, icc if isinstance(icc, bytes) and icc else None


def _upright(im: Image.Image) -> Image.Image:
    """A copy turned as its EXIF orientation says (the orientation then removed); a
    damaged EXIF block is not the picture's fault: the picture as stored, then."""
    try:
        return ImageOps.exif_transpose(im)
    except Exception as err:  # noqa: BLE001 - bad EXIF never fails the picture
        log.warning("convert.orientation_unreadable", error=f"{type(err).__name__}: {err}")
        return im.copy()


def _exif_without_orientation(im: Image.Image) -> bytes | None:
    try:
        exif = im.getexif()
        exif.pop(_ORIENTATION, None)
        if not len(exif):
            return None
        raw = exif.tobytes()
    except Exception as err:  # noqa: BLE001 - bad EXIF is left out, never fails the picture
        log.warning("convert.exif_dropped", error=f"{type(err).__name__}: {err}")
        return None
    if len(raw) > _MAX_JPEG_EXIF:
        log.warning("convert.exif_dropped", error=f"{len(raw)} bytes do not fit a JPEG marker")
        return None
    return raw


def _rgb(im: Image.Image) -> Image.Image:
    """RGB; a transparent picture laid on white (JPEG has no alpha)."""
    if im.mode == "RGB":
        return im
    if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        flat = Image.new("RGB", rgba.size, _WHITE)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return im.convert("RGB")


def sweep(folder: Path, *, older_than: float, now: float | None = None) -> int:
    """Remove temporary JPEGs older than `older_than` seconds (a killed worker's); how many."""
    now = time.time() if now is None else now
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        if not entry.name.startswith(TEMP_PREFIX):
            continue
        try:
            if now - entry.stat(follow_symlinks=False).st_mtime > older_than:
                os.unlink(entry.path)
                removed += 1
        except OSError:
            continue  # gone already, or another worker's sweep took it
    if removed:
        log.info("convert.swept", folder=str(folder), removed=removed)
    return removed


class Conversions:
    """The JPEGs made for one batch, by file id; `close()` (or leaving the `with`)
    removes them all. The first conversion sweeps stale leftovers from the folder."""

    def __init__(self, folder: Path, *, quality: int, max_bytes: int, stale_after: float) -> None:
        self.folder = folder
        self._quality = quality
        self._max_bytes = max_bytes
        self._stale_after = max(stale_after, MIN_STALE_AFTER)
        self._made: dict[int, Converted] = {}
        self._swept = False

    def convert(self, file_id: int, src: Path, *, name: str) -> Converted:
        """`src` as a JPEG sent under `name` made into `.jpg`; FileRejected when it cannot be."""
        if not self._swept:
            self._swept = True
            sweep(self.folder, older_than=self._stale_after)
        converted = to_jpeg(
            src, self.folder, name=name, quality=self._quality, max_bytes=self._max_bytes
        )
        previous = self._made.pop(file_id, None)
        if previous is not None:
            _remove(previous.path)
        self._made[file_id] = converted
        return converted

    def get(self, file_id: int) -> Converted | None:
        return self._made.get(file_id)

    def description(self, file_id: int) -> str | None:
        """What the ledger records for the file (None: sent as it is)."""
        converted = self._made.get(file_id)
        return converted.description if converted is not None else None

    def close(self) -> None:
        while self._made:
            _, converted = self._made.popitem()
            _remove(converted.path)

    def __enter__(self) -> Conversions:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as err:  # swept later, once stale
        log.warning("convert.temp_not_removed", path=str(path), error=err.strerror)

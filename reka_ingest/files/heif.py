"""HEIC/HEIF for Pillow, through pillow-heif: `ensure_registered()` before opening one.

Pillow reads AVIF on its own; HEIC/HEIF (what phones write) needs pillow-heif's
opener, registered once per process. Its extra images (thumbnails, depth maps,
auxiliary images) are left unread: nothing here uses them, and each costs
memory on every open.

Pillow's own plugins are loaded first, so the HEIF opener comes after Pillow's
AVIF one: both accept the generic `mif1` brand, and an AVIF file under that brand
must reach Pillow's AVIF decoder (pillow-heif builds no AV1 decoder), while a
HEIC under it is refused by the AVIF plugin and reaches pillow-heif.

Pillow tries its openers in the order they were registered. Its common ones (BMP,
GIF, JPEG, PPM, PNG: `Image.preinit`) go first, as when Pillow loads them itself;
loading them all at once (`Image.init`, alphabetical) put IM, IMT and IPTC,
whose openers accept any bytes and parse before refusing, ahead of JPEG, and every
JPEG the uploader checks paid for them (about 40% of `check_image`).
"""

from __future__ import annotations

import threading

import pillow_heif
from PIL import Image

_lock = threading.Lock()
_registered = False


def ensure_registered() -> None:
    """Register pillow-heif's opener with Pillow, once per process (safe to call often)."""
    global _registered  # noqa: PLW0603 - one flag per process: registration is process-wide
    if _registered:
        return
    with _lock:
        if not _registered:
            Image.preinit()  # the common formats first (JPEG before IM, IMT, IPTC)
            Image.init()  # Pillow's plugins (AVIF among them) first: see above
            pillow_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)
            _registered = True

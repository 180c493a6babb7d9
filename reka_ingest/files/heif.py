"""HEIC/HEIF for Pillow, through pillow-heif: `ensure_registered()` before opening one.

Pillow reads AVIF on its own; HEIC/HEIF (what phones write) needs pillow-heif's
opener, registered once per process. Its extra images (thumbnails, depth maps,
auxiliary images) are left unread: nothing here uses them, and each costs
memory on every open.
"""

from __future__ import annotations

import threading

import pillow_heif

_lock = threading.Lock()
_registered = False


def ensure_registered() -> None:
    """Register pillow-heif's opener with Pillow, once per process (safe to call often)."""
    global _registered  # noqa: PLW0603 - one flag per process: registration is process-wide
    if _registered:
        return
    with _lock:
        if not _registered:
            pillow_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)
            _registered = True

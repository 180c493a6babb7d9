"""Where an image's sidecar can be, named once: for `photo.jpg`, `photo.jpg.json`,
else `photo.json`. The watcher finds and claims a sidecar by this rule, recovery
pairs claimed files by it, and the outbox moves a sidecar with its image by it."""

from __future__ import annotations

import os
import stat
from typing import Final

SIDECAR_SUFFIX: Final = ".json"


def candidates(image_path: str) -> tuple[str, str]:
    """`photo.jpg` -> (`photo.jpg.json`, `photo.json`); a bare name or a whole path."""
    stem, _ = os.path.splitext(image_path)
    return image_path + SIDECAR_SUFFIX, stem + SIDECAR_SUFFIX


def find_sidecar(image_path: str) -> str | None:
    """The sidecar beside `image_path`, if there is one (a symlink counts: it is
    refused when read, and moved unread)."""
    for path in candidates(image_path):
        if path == image_path:
            continue
        # A cheap existence test first: most images have no sidecar, and a failed
        # `lstat` costs an exception (this runs two or four times for every file).
        if not os.access(path, os.F_OK, follow_symlinks=False):
            continue
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
            return path
    return None

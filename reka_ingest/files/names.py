"""Names the service derives from a file's name (claim names in `work/`, names in
`done/` and `failed/`, `NAME.error.json`), kept within `NAME_MAX`.

They are built from the name's shown form (reka_ingest.core.text, the `%XX`
rule) by `fit_name`, which shortens the stem and adds a short hash of the whole
name so two long names never collide; the full name stays in the ledger and the
reason file.
"""

from __future__ import annotations

import hashlib
import os
from typing import Final

from reka_ingest.core.text import shown

NAME_MAX: Final = 255  # bytes in one path component (Linux, macOS, most filesystems)
_HASH_CHARS: Final = 8
_MAX_EXT_BYTES: Final = 16  # an extension longer than this is not kept apart when shortening


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogateescape"))


def _cut(text: str, max_bytes: int) -> str:
    """The longest prefix of `text` whose UTF-8 form fits `max_bytes` (never half a char)."""
    raw = text.encode("utf-8", "surrogateescape")[: max(0, max_bytes)]
    return raw.decode("utf-8", "ignore")


def fit_name(name: str, reserve: int = 0) -> str:
    """`shown(name)`, shortened when needed so that it plus `reserve` bytes fits NAME_MAX.

    A shortened name keeps its extension (when short) and gets `~` and a hash of
    the whole name before it: `a_very_long…~1f2e3d4c.jpg`.
    """
    text = shown(name)
    budget = NAME_MAX - reserve
    if utf8_len(text) <= budget:
        return text
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:_HASH_CHARS]
    stem, ext = os.path.splitext(text)
    if utf8_len(ext) > _MAX_EXT_BYTES:
        stem, ext = text, ""
    room = budget - utf8_len(ext) - 1 - _HASH_CHARS
    return f"{_cut(stem, room)}~{digest}{ext}"


def fit_path(rel_path: str, reserve: int = 0) -> str:
    """A relative path whose every folder fits NAME_MAX and whose last name leaves
    `reserve` bytes; `..`, `.` and empty parts dropped (it cannot climb out)."""
    parts = [p for p in rel_path.split(os.sep) if p not in ("", ".", "..")]
    if not parts:
        return "unnamed"
    *folders, last = parts
    return os.path.join(*[fit_name(p) for p in folders], fit_name(last, reserve))

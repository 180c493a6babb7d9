"""File names as bytes, shown as text: one rule for every place a name is seen.

A POSIX name is any bytes but `/` and NUL. Python gives such a name to us as
`str` with each byte that is not UTF-8 carried as a lone surrogate
(`os.fsdecode`, `surrogateescape`); such a string cannot be stored in a text
column, written as UTF-8 or sent in a request. So every name that leaves the
filesystem layer (the ledger's `path`, `files --json/--csv`, logs, reason
files) goes through `shown`:

    a name that is valid UTF-8 is shown as it is;
    each byte that is not is shown as `%XX` (two uppercase hex digits):
    b"caf\\xe9.jpg" -> "caf%E9.jpg".

Names the service derives (claim names in `work/`, names in `done/` and
`failed/`, `NAME.error.json`) are built from the shown form and kept within
`NAME_MAX` by `fit_name`, which shortens the stem and adds a short hash of the
whole name so two long names never collide; the full name stays in the
ledger and the reason file. `clean_text` bounds any other foreign string
(a message, an error's text) before it reaches a column: no NUL, no lone
surrogate, at most a given length.
"""

from __future__ import annotations

import hashlib
import os
from typing import Final

NAME_MAX: Final = 255  # bytes in one path component (Linux, macOS, most filesystems)
_HASH_CHARS: Final = 8
_MAX_EXT_BYTES: Final = 16  # an extension longer than this is not kept apart when shortening
_SURROGATE_LOW: Final = 0xDC80
_SURROGATE_HIGH: Final = 0xDCFF


def shown(name: str) -> str:
    """`name` (as `os.fsdecode` gives it) as valid UTF-8 text, by the `%XX` rule."""
    if name.isascii():
        return name
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        pass
    else:
        return name
    out: list[str] = []
    for ch in name:
        code = ord(ch)
        if _SURROGATE_LOW <= code <= _SURROGATE_HIGH:
            out.append(f"%{code - 0xDC00:02X}")  # a byte that was not UTF-8
        elif 0xD800 <= code <= 0xDFFF:
            out.append(f"%{code:04X}")  # any other lone surrogate (not from a name)
        else:
            out.append(ch)
    return "".join(out)


def clean_text(text: str, limit: int | None = None) -> str:
    """A foreign string made safe for a text column: shown, no NUL, at most `limit` chars."""
    text = shown(text).replace("\x00", "\\0")
    if limit is not None and len(text) > limit:
        text = text[: max(0, limit - 3)] + "..."
    return text


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

"""INGEST_PATH_METADATA: metadata read from the folders a file sits in.

A pattern is folder segments joined by `/`, matched against the folders of a
file's path below the inbox (or the scanned root), from the top:

    {key}   one folder; its name becomes the value of `key` (a string)
    *       one folder, any name, not kept
    **      (last segment only) any number of further folders, none included
    text    one folder named exactly `text` (case matters)

Without a final `**` the file must sit exactly as deep as the pattern is long:
`{site_id}/{camera_id}/*` fits `lot-7/cam-3/2026-11-27/a.jpg` (site_id=lot-7,
camera_id=cam-3) and neither `lot-7/a.jpg` nor `lot-7/cam-3/day/extra/a.jpg`.

A folder name is any bytes; the value kept is the name as
`reka_ingest.core.text.shown` gives it (valid UTF-8 as it is, each byte that is
not as `%XX`), so it can be stored and sent.

Pure and importable from anywhere: settings check a pattern with `PathPattern.parse`
at start, the scheduler matches files with it, `plan` may too.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from enum import Enum
from typing import Final

from reka_ingest.core.text import shown

# A key is a plain name: letters, digits and `_`, not starting with a digit.
_KEY: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Keys a folder name (a string) can never be a valid value of: ours (`index`, a
# boolean) and Reka's fields that are not strings (`reka_ingest.reka.models.
# SecurityMetadata`; a test holds the two lists together).
NOT_TEXT_KEYS: Final = frozenset({"index", "recorded_timestamp_utc", "detection_metadata"})


class Kind(Enum):
    KEY = "key"
    ANY = "any"
    REST = "rest"
    LITERAL = "literal"


@dataclass(frozen=True, slots=True)
class Segment:
    kind: Kind
    text: str  # the key's name, or the literal folder name; "" for `*` and `**`


def _segment(text: str, position: int, last: bool) -> Segment:
    where = f"segment {position} ({text!r})"
    if text == "**":
        if not last:
            raise ValueError(f"{where}: `**` may only be the last segment")
        return Segment(Kind.REST, "")
    if text == "*":
        return Segment(Kind.ANY, "")
    if text.startswith("{") and text.endswith("}") and len(text) >= 2:
        key = text[1:-1]
        if not key:
            raise ValueError(f"{where}: empty key name")
        if not _KEY.fullmatch(key):
            raise ValueError(
                f"{where}: a key is letters, digits and `_`, not starting with a digit"
            )
        if key in NOT_TEXT_KEYS:
            raise ValueError(f"{where}: `{key}` is not a text field; a folder name cannot set it")
        return Segment(Kind.KEY, key)
    if "{" in text or "}" in text:
        raise ValueError(f"{where}: `{{key}}` must be a whole segment, with no other text")
    if "*" in text:
        raise ValueError(f"{where}: `*` and `**` must be a whole segment (no partial wildcards)")
    if text in (".", ".."):
        raise ValueError(f"{where}: `.` and `..` are not folder names")
    return Segment(Kind.LITERAL, text)


@dataclass(frozen=True, slots=True)
class PathPattern:
    """A parsed INGEST_PATH_METADATA; `match` a file's folder against it."""

    text: str
    segments: tuple[Segment, ...]

    @classmethod
    def parse(cls, text: str) -> PathPattern:
        """The pattern `text` spells; `ValueError` saying what is wrong otherwise.

        One leading and one trailing `/` are allowed (the pattern always starts at
        the root and names folders only); empty segments (`a//b`) are not.
        """
        body = text.strip()
        body = body.removeprefix("/").removesuffix("/")
        if not body:
            raise ValueError("empty pattern: name at least one folder segment")
        parts = body.split("/")
        segments: list[Segment] = []
        keys: set[str] = set()
        for i, part in enumerate(parts, start=1):
            if not part:
                raise ValueError(f"segment {i} is empty (`//` in the pattern)")
            seg = _segment(part, i, last=i == len(parts))
            if seg.kind is Kind.KEY:
                if seg.text in keys:
                    raise ValueError(f"segment {i}: key `{seg.text}` appears twice")
                keys.add(seg.text)
            segments.append(seg)
        return cls(text=body, segments=tuple(segments))

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(s.text for s in self.segments if s.kind is Kind.KEY)

    def match(self, rel_dir: str) -> dict[str, str] | None:
        """The values `rel_dir` (a folder below the root, `os.sep`-separated, "" or
        "." for the root itself) gives the keys; None when it does not fit."""
        found = self._fit(folders(rel_dir))
        return found if isinstance(found, dict) else None

    def why_not(self, rel_dir: str) -> str | None:
        """Why `rel_dir` does not fit, in words (None when it does)."""
        found = self._fit(folders(rel_dir))
        return found if isinstance(found, str) else None

    def _fit(self, names: list[str]) -> dict[str, str] | str:
        rest = bool(self.segments) and self.segments[-1].kind is Kind.REST
        fixed = self.segments[:-1] if rest else self.segments
        if len(names) < len(fixed) or (not rest and len(names) > len(fixed)):
            want = f"{len(fixed)}{' or more' if rest else ''}"
            return f"{_levels(len(names))} deep, the pattern wants {want}"
        values: dict[str, str] = {}
        for i, (seg, folder) in enumerate(zip(fixed, names, strict=False), start=1):
            if seg.kind is Kind.KEY:
                values[seg.text] = shown(folder)
            elif seg.kind is Kind.LITERAL and folder != seg.text:
                return f"folder {i} is {shown(folder)!r}, the pattern wants {seg.text!r}"
        return values


def folders(rel_dir: str) -> list[str]:
    """The folder names of `rel_dir`, top first ("" and "." are the root: none)."""
    return [p for p in rel_dir.split(os.sep) if p and p != "."]


def _levels(n: int) -> str:
    return "1 folder" if n == 1 else f"{n} folders"

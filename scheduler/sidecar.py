"""Sidecar metadata: a JSON object beside the image, merged over folder defaults,
folder-derived values and the EXIF capture time.

For `photo.jpg` the sidecar is `photo.jpg.json`, else `photo.json`. An image's
metadata is merged from layers, key by key at the top level, the higher layer
winning (this order is the one place precedence is decided):

    1. the sidecar                          (highest)
    2. every `_defaults.json` from the image's folder up to the watched root
       (the deeper file wins)
    3. the folders' values, INGEST_PATH_METADATA (`scheduler.path_metadata`)
    4. `recorded_timestamp_utc` from EXIF `DateTimeOriginal`  (lowest;
       `reka_ingest.files.exif`), read only when no layer above names the key
       (a sidecar's `"recorded_timestamp_utc": null` names it too: EXIF is not read)

The merged object is validated strictly, once: the documented Reka fields
must have their documented types (`recorded_timestamp_utc` is an integer; a
string is an error, not a conversion), other keys pass through untouched.
`index` (default true) is ours: whether Reka should index the image; it is
not sent as metadata.

Nothing here follows a symbolic link, reads more than `MAX_SIDECAR_BYTES`,
parses JSON nested deeper than `MAX_SIDECAR_DEPTH`, accepts a number that is
not finite (`NaN`, `Infinity`, `1e400`), or treats a value as a path: a
sidecar cannot make the service read or write anywhere else. Any problem is a
`FileRejected(Reason.BAD_SIDECAR, ...)` whose message names the file and the field.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from pydantic import ValidationError

from reka_ingest.core.errors import FileRejected
from reka_ingest.core.states import Reason
from reka_ingest.files.sidecars import candidates, find_sidecar
from reka_ingest.reka.models import SecurityMetadata
from scheduler.constants import DEFAULTS_NAME, MAX_SIDECAR_BYTES, MAX_SIDECAR_DEPTH

__all__ = ["DefaultsReader", "candidates", "find_sidecar", "load", "merge", "read_object"]

INDEX_KEY = "index"
TIME_KEY = "recorded_timestamp_utc"
# How the two layers that are not files are named in messages.
PATH_LAYER = "INGEST_PATH_METADATA"
EXIF_LAYER = "EXIF DateTimeOriginal"
_SHOWN_INPUT_CHARS = 60


class SidecarFields(SecurityMetadata):
    """The keys we check: Reka's image metadata (`reka_ingest.reka.models`) and our
    own `index`; any other key is passed through as it is. Validated with
    `strict=True` (nested detections too): a documented field's value must have
    its documented type, never be converted to it."""

    index: bool = True


@dataclass(frozen=True, slots=True)
class Sidecar:
    """What an image carries to Reka: its metadata (None when empty) and its index flag."""

    metadata: dict[str, object] | None
    index: bool = True


NO_SIDECAR = Sidecar(metadata=None, index=True)

Layer = tuple[str, dict[str, object]]  # (file name shown in messages, its object)


def _bad(name: str, detail: str) -> FileRejected:
    return FileRejected(Reason.BAD_SIDECAR, f"{name}: {detail}")


def read_object(path: str, *, shown_as: str | None = None) -> dict[str, object]:
    """Read one JSON object from `path`, never through a symlink, never more than the cap."""
    name = shown_as or os.path.basename(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise _bad(name, "symbolic links are never followed") from None
        raise _bad(name, f"cannot read: {err.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _bad(name, "not a regular file")
        if st.st_size > MAX_SIDECAR_BYTES:
            raise _bad(name, f"{st.st_size} bytes is over the limit of {MAX_SIDECAR_BYTES}")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            raw = fh.read(MAX_SIDECAR_BYTES + 1)
    finally:
        os.close(fd)
    return parse_object(raw, name)


_UTF16_BOMS: Final = (b"\xff\xfe", b"\xfe\xff")


def parse_object(raw: bytes, name: str) -> dict[str, object]:
    """One JSON object from `raw`, or `FileRejected(bad_sidecar)` saying what is wrong.

    A leading UTF-8 byte order mark is skipped (Windows editors write one; RFC 8259
    lets a parser ignore it), as in an image URL list."""
    if raw.startswith(_UTF16_BOMS):
        raise _bad(name, "UTF-16 text; save it as UTF-8")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _bad(name, "not UTF-8 text") from None
    depth = nesting_depth(text)
    if depth > MAX_SIDECAR_DEPTH:
        raise _bad(name, f"JSON nested {depth} deep; at most {MAX_SIDECAR_DEPTH} levels are read")
    try:
        data = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as err:
        raise _bad(name, f"invalid JSON: {err}") from None
    if not isinstance(data, dict):
        raise _bad(name, f"must be a JSON object, not {_json_type(data)}")
    return data


def nesting_depth(text: str) -> int:
    """How deep arrays and objects nest in `text` (brackets inside strings not counted).

    Counted without parsing, so a document of 100,000 `[` is refused in linear
    time instead of reaching the parser's recursion.
    """
    if text.count("[") + text.count("{") <= MAX_SIDECAR_DEPTH:
        return 0  # cannot nest deeper than the limit: skip the walk
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else type(value).__name__


def _reject_constant(token: str) -> object:
    raise ValueError(f"{token} is not valid JSON")


def _finite_float(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):
        raise ValueError(f"the number {token[:40]} is too large to be a finite number")
    return value


def _where(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(object)"


def merge(layers: Sequence[Layer]) -> Sidecar:
    """Merge layers (lowest first: EXIF, path, outermost defaults, ..., the sidecar last)
    and validate the result."""
    merged: dict[str, object] = {}
    owner: dict[str, str] = {}
    for name, obj in layers:
        merged.update(obj)
        owner.update(dict.fromkeys(obj, name))
    if not merged:
        return NO_SIDECAR
    try:
        fields = SidecarFields.model_validate(merged, strict=True)
    except ValidationError as err:
        problems = []
        for item in err.errors():
            loc = item["loc"]
            top = str(loc[0]) if loc else ""
            shown = repr(item.get("input"))
            if len(shown) > _SHOWN_INPUT_CHARS:
                shown = shown[:_SHOWN_INPUT_CHARS] + "..."
            problems.append(f"{owner.get(top, '?')}: {_where(loc)}: {item['msg']} (got {shown})")
        raise FileRejected(Reason.BAD_SIDECAR, "; ".join(problems)) from None
    metadata = {k: v for k, v in merged.items() if k != INDEX_KEY}
    return Sidecar(metadata=metadata or None, index=fields.index)


class DefaultsReader:
    """The `_defaults.json` layers for a folder below `root`, read once and kept
    until the file's size or mtime changes.

    Each file is stat'ed once per *look*: the caller calls `new_look()` when a
    round of work starts (the watcher: every tick), so a burst of files in one
    folder costs one `stat` per folder level, not one per file.
    """

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        # path -> ((size, mtime_ns), the object or the message of why it is bad)
        self._cache: dict[str, tuple[tuple[int, int], dict[str, object] | str]] = {}
        self._looked: dict[str, tuple[int, int] | None] = {}  # stat results of this look
        self._layers: dict[str, list[Layer] | str] = {}  # per folder, for this look

    def new_look(self) -> None:
        """Stat every defaults file again on next use (they may have changed)."""
        self._looked.clear()
        self._layers.clear()

    def layers(self, rel_dir: str) -> list[Layer]:
        """Defaults from `root` down to `root/rel_dir`; raises `FileRejected` for a bad one."""
        found = self._layers.get(rel_dir)
        if found is None:
            try:
                found = self._collect(rel_dir)
            except FileRejected as err:
                found = err.message
            self._layers[rel_dir] = found
        if isinstance(found, str):
            raise FileRejected(Reason.BAD_SIDECAR, found)
        return found

    def _collect(self, rel_dir: str) -> list[Layer]:
        parts = [p for p in rel_dir.split(os.sep) if p and p != "."] if rel_dir else []
        out: list[Layer] = []
        folder = self.root
        rel = ""
        for depth in range(len(parts) + 1):
            if depth:
                folder = os.path.join(folder, parts[depth - 1])
                rel = os.path.join(rel, parts[depth - 1])
            obj = self._read(os.path.join(folder, DEFAULTS_NAME), os.path.join(rel, DEFAULTS_NAME))
            if obj:
                out.append((os.path.join(rel, DEFAULTS_NAME), obj))
        return out

    def _stat(self, path: str) -> tuple[int, int] | None:
        if path not in self._looked:
            try:
                st = os.lstat(path)
                self._looked[path] = (st.st_size, st.st_mtime_ns)
            except OSError:
                self._looked[path] = None
        return self._looked[path]

    def _read(self, path: str, shown_as: str) -> dict[str, object] | None:
        key = self._stat(path)
        if key is None:
            self._cache.pop(path, None)
            return None
        cached = self._cache.get(path)
        if cached is None or cached[0] != key:
            try:
                value: dict[str, object] | str = read_object(path, shown_as=shown_as)
            except FileRejected as err:
                value = err.message
            cached = (key, value)
            self._cache[path] = cached
        if isinstance(cached[1], str):
            raise FileRejected(Reason.BAD_SIDECAR, cached[1])
        return cached[1]


def load(
    sidecar_path: str | None,
    defaults: Sequence[Layer],
    *,
    shown_as: str | None = None,
    folder_values: Mapping[str, str] | None = None,
    capture_time: Callable[[], int | None] | None = None,
) -> Sidecar:
    """An image's metadata: the layers of the module's precedence, lowest first,
    merged and validated. `capture_time` (the EXIF reader) is called only when no
    other layer names `recorded_timestamp_utc`."""
    own = list(defaults)
    if sidecar_path is not None:
        own.append(
            (
                shown_as or os.path.basename(sidecar_path),
                read_object(sidecar_path, shown_as=shown_as),
            )
        )
    above: list[Layer] = [(PATH_LAYER, dict(folder_values))] if folder_values else []
    above.extend(own)
    layers: list[Layer] = []
    if capture_time is not None and not any(TIME_KEY in obj for _, obj in above):
        seconds = capture_time()
        if seconds is not None:
            layers.append((EXIF_LAYER, {TIME_KEY: seconds}))
    layers.extend(above)
    return merge(layers)

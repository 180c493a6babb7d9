"""Shared by the poison-proof intake tests (tests/scheduler/test_poison_properties.py,
tests/e2e/test_poison_drill.py): the name rule as an independent oracle, the
poison contents, writing names as bytes, and reading back what is left where.

The oracle is written here from the rule, not imported from the product:

    a name (or relative path) that is valid UTF-8 is shown as it is;
    each byte that is not is shown as `%XX` (two uppercase hex digits).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

AnyPath = str | bytes | os.PathLike[str]

NAME_MAX = 255

# Sidecar contents that must never crash anything (issue 10).
DEEP_ARRAY = b"[" * 100_000  # unterminated, 100,000 deep
DEEP_OBJECT_OPEN = b'{"k":' * 100_000  # unterminated deep object
DEEP_ARRAY_CLOSED = b"[" * 100_000 + b"]" * 100_000  # valid JSON, not an object
DEEP_OBJECT_CLOSED = b'{"x-deep":' * 100_000 + b"1" + b"}" * 100_000  # a valid, deep object

_ESCAPED = re.compile("[\udc80-\udcff]")


def shown(raw: bytes) -> str:
    """The text a name (or a relative path, `/`-separated) must be shown as."""
    text = raw.decode("utf-8", "surrogateescape")
    return _ESCAPED.sub(lambda m: f"%{ord(m.group()) - 0xDC00:02X}", text)


def fits(path: str | bytes) -> bool:
    """Whether the last component of `path` is at most NAME_MAX bytes."""
    return len(os.path.basename(os.fsencode(path))) <= NAME_MAX


def write_at(root: AnyPath, rel: bytes, data: bytes) -> bytes:
    """Write `data` at `root/rel` (rel as bytes), making its folders; returns the path."""
    path = os.path.join(os.fsencode(root), rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)
    return path


def files_under(folder: AnyPath) -> list[bytes]:
    """Every non-folder entry below `folder` (files, links), as bytes paths."""
    found: list[bytes] = []
    for top, _dirs, names in os.walk(os.fsencode(folder)):
        found.extend(os.path.join(top, n) for n in names)
    return found


def is_strict_json(value: Any) -> bool:
    """Whether `value` can be sent as standard JSON (no NaN, no Infinity)."""
    try:
        json.dumps(value, allow_nan=False)
    except (ValueError, TypeError, RecursionError):
        return False
    return True


def read_reason_file(path: str) -> dict[str, Any]:
    with open(path, "rb") as fh:
        data: dict[str, Any] = json.loads(fh.read().decode("utf-8"))
    return data


def wait_until(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    *,
    detail: Callable[[], str] | None = None,
    interval: float = 0.05,
) -> None:
    """Poll `predicate` until true; else fail naming `what`, with `detail()` appended."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            extra = detail() if detail is not None else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{extra}")
        time.sleep(interval)


def short(items: Iterable[Any], limit: int = 40) -> str:
    """A bounded, readable listing for failure messages."""
    out = [repr(i)[:300] for i in items]
    more = f"\n  ... and {len(out) - limit} more" if len(out) > limit else ""
    return "\n  ".join(["", *out[:limit]]) + more

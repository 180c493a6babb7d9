"""The last server check's findings, kept in Redis for the metrics and `status`.

Beat's periodic check (`INGEST_SERVER_CHECK_INTERVAL`; the task in
`worker.tasks`) compares the ledger with what Reka holds and writes its counts
here, one JSON document under one key (`SERVER_CHECK_KEY`), so every metrics
endpoint and every `reka-ingest status` on any machine reads the same answer:

    {"at": 1764270000.0, "seconds": 12.3, "images_on_server": 1000,
     "rows_checked": 1000, "orphans": 3, "missing": 0, "drift": 0,
     "duplicates_settled": 2, "duplicates_unsettled": 0, "requests": 11,
     "notes": [...], "error": null, "error_at": null}

`at` is when the last check that finished was done (epoch seconds). A check
that fails keeps the last good counts and adds `error` and `error_at`; one
that succeeds clears them. Nothing is written by a check that never ran, so an
absent key reads as "never run".

Only counts and times are kept (never ids, paths or examples): the key stays a
few hundred bytes whatever the size of the ledger.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import redis

SERVER_CHECK_KEY: Final = "reka_ingest:server_check"
# Held while a check runs (SET NX EX): a check still running when beat sends the
# next is not doubled.
SERVER_CHECK_LOCK_KEY: Final = "reka_ingest:server_check:running"
COUNTS: Final = (
    "images_on_server",
    "rows_checked",
    "orphans",
    "in_flight",
    "missing",
    "drift",
    "duplicates_settled",
    "duplicates_unsettled",
    "requests",
)
MAX_NOTES: Final = 10
MAX_NOTE_CHARS: Final = 500
MAX_ERROR_CHARS: Final = 1000


@dataclass(frozen=True, slots=True)
class ServerCheck:
    """The stored findings; `at` None: no check has finished yet (only failures)."""

    at: float | None
    seconds: float | None
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    error_at: float | None = None

    @property
    def orphans(self) -> int | None:
        return self.counts.get("orphans") if self.at is not None else None

    @property
    def missing(self) -> int | None:
        return self.counts.get("missing") if self.at is not None else None

    def failed_last(self) -> bool:
        """Whether the latest attempt failed (its error is newer than the last success)."""
        return self.error_at is not None and (self.at is None or self.error_at >= self.at)

    def as_json(self, now: float) -> dict[str, Any]:
        return {
            "at": self.at,
            "age_seconds": None if self.at is None else round(max(0.0, now - self.at), 1),
            "seconds": self.seconds,
            **{name: self.counts.get(name) if self.at is not None else None for name in COUNTS},
            "notes": list(self.notes),
            "error": self.error,
            "error_at": self.error_at,
        }


def record_check(
    client: redis.Redis[bytes],
    counts: Mapping[str, object],
    *,
    at: float,
    seconds: float,
    notes: list[str] | None = None,
) -> None:
    """Store a finished check's counts (from `CheckReport.to_json()`, or the report's
    fields); names outside `COUNTS` are ignored."""
    doc = {
        "at": at,
        "seconds": round(seconds, 3),
        **{name: _count(counts.get(name)) for name in COUNTS},
        "notes": [str(n)[:MAX_NOTE_CHARS] for n in (notes or [])[:MAX_NOTES]],
        "error": None,
        "error_at": None,
    }
    client.set(SERVER_CHECK_KEY, json.dumps(doc))


def record_failure(client: redis.Redis[bytes], error: str, *, at: float) -> None:
    """Note a check that failed, keeping the last good counts."""
    raw = client.get(SERVER_CHECK_KEY)
    doc = _load(raw) if raw is not None else {}
    doc.update(error=error[:MAX_ERROR_CHARS], error_at=at)
    client.set(SERVER_CHECK_KEY, json.dumps(doc))


def read_server_check(client: redis.Redis[bytes]) -> ServerCheck | None:
    """The stored findings; None when no check ever wrote them (or they do not parse)."""
    raw = client.get(SERVER_CHECK_KEY)
    if raw is None:
        return None
    doc = _load(raw)
    if not doc:
        return None
    at = _time(doc.get("at"))
    return ServerCheck(
        at=at,
        seconds=_time(doc.get("seconds")),
        counts={name: _count(doc.get(name)) for name in COUNTS if name in doc},
        notes=[str(n) for n in doc.get("notes") or [] if isinstance(n, str)],
        error=str(doc["error"]) if doc.get("error") is not None else None,
        error_at=_time(doc.get("error_at")),
    )


def ago(seconds: float) -> str:
    """A short age for people: `40 s`, `12 min`, `3 h 05 min`, `2 d 4 h`."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def describe(check: ServerCheck | None, now: float) -> str:
    """One line for `status`: `3 orphans, 0 missing, 12 min ago`, or `never run`."""
    if check is None:
        return "never run"
    if check.at is None:
        text = "never finished"
    else:
        c = check.counts
        text = f"{c.get('orphans', 0)} orphans, {c.get('missing', 0)} missing"
        if c.get("drift"):
            text += f", {c['drift']} drifted"
        if c.get("duplicates_unsettled"):
            text += f", {c['duplicates_unsettled']} possible duplicates unsettled"
        text += f", {ago(now - check.at)} ago"
    if check.failed_last() and check.error_at is not None:
        text += f"; last attempt failed {ago(now - check.error_at)} ago: {check.error}"
    return text


def _load(raw: bytes | str) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _count(value: object) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    return 0


def _time(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None

"""Column types that make any Python value storable on SQLite and PostgreSQL alike.

Every text column of the ledger is one of these, so no write (intake, an upload's
answer, a poll, an error's text) needs to remember the rules:

    NUL is escaped (`\\0`): PostgreSQL refuses it in text;
    a lone surrogate (a name byte that is not UTF-8) is shown as `%XX`: it
    cannot be encoded as UTF-8 at all;
    a string longer than a bounded column (`String(128)`: request ids, image
    ids) is cut to fit, ending in `...`: PostgreSQL refuses it, SQLite would
    keep it whole.

The rule is `reka_ingest.core.text.clean_text`, the one the intake already
applies to names; applied twice it changes nothing, so values cleaned before
(and values compared in a WHERE clause, which go through the same type) match
what is stored. A string that needs none of it is passed through untouched.

An indexed path (`files.work_path`, unique) is also kept within
`MAX_KEY_BYTES` bytes of UTF-8 (`keyable`): PostgreSQL refuses a btree entry
past about 2,700 bytes, and a POSIX path may be 4,096. A longer one keeps its
head and ends in `~` and 16 hex digits of its hash, so two never meet; the
intake fails such a file alone (`refused_path`, see `ledger.intake.for_ledger`).

The JSON sidecar gets the same rule on every string in it (keys and values):
PostgreSQL's `json` keeps `\\u0000` and a lone `\\udc80` as text it cannot turn
into `jsonb` or extract with `->>`.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import JSON, String, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from reka_ingest.core.text import clean_text


def storable(value: str, limit: int | None = None) -> str:
    """`value` as a text column of at most `limit` characters stores it."""
    if (
        (limit is None or len(value) <= limit)
        and "\x00" not in value
        and (value.isascii() or _encodes(value))
    ):
        return value
    return clean_text(value, limit)


# PostgreSQL's btree entries are at most a third of a page (2,704 bytes of 8 KiB);
# an indexed text value stays well under it, on every ledger alike.
MAX_KEY_BYTES = 2000
_KEY_HASH_HEX = 16


def keyable(value: str) -> str:
    """`value` as an indexed text column stores it: storable, and at most
    `MAX_KEY_BYTES` bytes of UTF-8 (a longer one: its head, `~`, 16 hex of its hash)."""
    value = storable(value)
    raw = value.encode("utf-8")
    if len(raw) <= MAX_KEY_BYTES:
        return value
    digest = hashlib.sha256(raw).hexdigest()[:_KEY_HASH_HEX]
    head = raw[: MAX_KEY_BYTES - _KEY_HASH_HEX - 1].decode("utf-8", "ignore")
    return f"{head}~{digest}"


def _encodes(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def storable_json(value: Any) -> Any:
    """A JSON value with every string in it (keys too) storable."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, dict):
        return {storable(str(k)): storable_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable_json(v) for v in value]
    return value


class BoundedString(TypeDecorator[str]):
    """`VARCHAR(length)` that stores any str: cleaned, and cut to `length`."""

    impl = String
    cache_ok = True

    def __init__(self, length: int) -> None:
        super().__init__(length)
        self.length = length

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else storable(value, self.length)


class SafeText(TypeDecorator[str]):
    """`TEXT` that stores any str: cleaned, and cut to `limit` characters when given
    (a bound of ours, not the database's: the column itself is unbounded)."""

    impl = Text
    cache_ok = True

    def __init__(self, limit: int | None = None) -> None:
        super().__init__()
        self.limit = limit

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else storable(value, self.limit)


class KeyText(TypeDecorator[str]):
    """`TEXT` under a btree index: any str, stored by `keyable`."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else keyable(value)


class SafeJSON(TypeDecorator[Any]):
    """JSON whose strings are all storable (PostgreSQL `json`, SQLite text)."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return storable_json(value)

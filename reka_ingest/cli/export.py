"""`files --csv` and `files --json` at a million rows: the same bytes as
`csv.writer` (its default dialect) and `json.dumps(record, ensure_ascii=False)`
per row would write, made a column at a time.

A chunk of driver rows (reka_ingest.ledger.queries.iter_file_chunks) is turned
into columns (`zip(*rows)`), each column formatted by C code where it can be
(a column of numbers encoded as one JSON array and split, a JSON text column
mapped through the encoder's string function), and each row joined from its
column texts by one C call (`",".join`, `"".join`). No Python code runs per
value except where a value needs it (a CSV field to quote), which is why a
million rows take seconds, not a minute.

A column of numbers is written by orjson, whose shortest float text is
Python's own `repr` digits at a sixth of the cost (the timestamps are most of
an export's numbers). Where the two may differ (an exponent, a NaN or an
infinity, anything not a number) the standard library's encoder writes it.

The one JSON array per column is split on "\\x00": the encoder's item separator
here, and a character an encoded string never holds (it is written `\\u0000`).
tests/ledger/test_export_format.py holds the property that these bytes are the
writers' own for any values.
"""

from __future__ import annotations

import bisect
import ctypes
import gc
import itertools
import json
import json.encoder
import operator
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final, Literal, TextIO

import orjson

FILE_FIELDS: Final = (
    "id",
    "path",
    "origin",
    "sha256",
    "state",
    "reason",
    "message",
    "image_id",
    "image_url",
    "indexing_status",
    "upload_timestamp",
    "possible_duplicate",
    "duplicate_of",
    "batch_id",
    "upload_request_id",
    "conversion",
    "size",
    "seen_at",
    "uploaded_at",
    "indexed_at",
    "seconds_to_indexed",
    "final_path",
)

# The ledger's columns behind FILE_FIELDS (`seconds_to_indexed` is computed from two).
COLUMNS: Final = tuple(name for name in FILE_FIELDS if name != "seconds_to_indexed")
_SECONDS_AT: Final = FILE_FIELDS.index("seconds_to_indexed")
_SEEN_AT, _INDEXED_AT = COLUMNS.index("seen_at"), COLUMNS.index("indexed_at")

Kind = Literal["text", "number", "bool"]

# How each field is written, from the ledger's column types (tests/ledger/test_export.py
# holds this to the schema). Spelled out, not derived: the export's helper process
# (reka_ingest.cli.export_pair) imports this module, orjson and the standard library only.
_TEXT: Final = frozenset(
    {
        "path", "origin", "sha256", "state", "reason", "message", "image_id", "image_url",
        "upload_request_id", "conversion", "final_path",
    }
)  # fmt: skip
KINDS: Final[tuple[Kind, ...]] = tuple(
    "bool" if name == "possible_duplicate" else "text" if name in _TEXT else "number"
    for name in FILE_FIELDS
)

# One JSON value per item, items apart by "\x00" (never inside an encoded value).
_SEP: Final = "\x00"
_ENCODE_ITEMS: Final = json.JSONEncoder(
    ensure_ascii=False, check_circular=False, separators=(_SEP, ": ")
).encode
# What json.dumps(ensure_ascii=False) writes for a str (the C function, where built).
_ENCODE_TEXT: Final = json.encoder.encode_basestring
# What `json.dumps(record, ensure_ascii=False)` writes before each value of a record
# (its closing "}" is the caller's): a row is one join of these, each followed by its
# value's text. Every row shares them; a prefixed copy of each value instead (22 new
# small objects a row) kept Python's allocator mapping and unmapping its arenas:
# ~400,000 page faults for a million rows, a sixth of the export's time.
_JSON_PREFIXES: Final = tuple(
    ("{" if i == 0 else ", ") + json.dumps(name) + ": " for i, name in enumerate(FILE_FIELDS)
)
# A number's JSON text -> csv.writer's (`str(value)`), where they differ.
_CSV_NUMBER: Final = {"null": "", "NaN": "nan", "Infinity": "inf", "-Infinity": "-inf"}
# A field csv.writer quotes holds one of these (QUOTE_MINIMAL: the delimiter, the
# quote, a line end).
_CSV_SPECIAL: Final = ',"\r\n'
# Where orjson's text of a number may not be `json.dumps`'s: an exponent (orjson
# writes "1e-7" for "1e-07"; "true" and "false" have an "e" too) and a number below
# 1e-4, which Python writes with one ("0.000099" for "9.9e-05"). From 1e16 both
# write "1e+16". A match in a long fraction only costs that value a second encoding.
_ORJSON_MAY_DIFFER: Final = re.compile(r"e|0\.0000")
_CSV_BOOL: Final[dict[Any, str]] = {None: "", False: "False", True: "True"}
_JSON_BOOL: Final[dict[Any, str]] = {None: "null", False: "false", True: "true"}


def columns_of(rows: Sequence[tuple[Any, ...]]) -> list[Sequence[Any]]:
    """A chunk of COLUMNS rows as FILE_FIELDS columns (seconds_to_indexed computed)."""
    cols: list[Sequence[Any]] = list(zip(*rows, strict=True))
    seconds = [
        None if indexed is None else round(indexed - seen, 3)
        for indexed, seen in zip(cols[_INDEXED_AT], cols[_SEEN_AT], strict=True)
    ]
    cols.insert(_SECONDS_AT, seconds)
    return cols


def _items(values: Sequence[Any]) -> list[str]:
    """Each value's JSON text, in one encoder call."""
    if not values:
        return []
    encoded = _ENCODE_ITEMS(list(values))[1:-1]
    return encoded.split(_SEP)


def _holding(texts: Sequence[str], offsets: Iterable[int]) -> set[int]:
    """The indexes of the texts that `offsets` fall in, in the texts joined by one
    character: text i ends (its separator) at ends[i]."""
    ends = list(map(operator.add, itertools.accumulate(map(len, texts)), range(len(texts))))
    return {bisect.bisect_left(ends, at) for at in offsets}


def _number_items(values: Sequence[Any]) -> list[str]:
    """Each number's JSON text: what `_items` gives, from orjson."""
    try:
        encoded = orjson.dumps(values)[1:-1].decode("ascii")
    except (orjson.JSONEncodeError, UnicodeDecodeError):  # a bigger int; a text's char
        return _items(values)
    # A text (a quote) can hold the separator; orjson writes NaN and infinities as null;
    # [] is "", no item.
    if (
        '"' in encoded
        or encoded.count("null") != values.count(None)
        or encoded.count(",") + 1 != len(values)
    ):
        return _items(values)
    if "e" not in encoded and "0.0000" not in encoded:
        return encoded.split(",")
    items = encoded.split(",")
    for i in _holding(items, (m.start() for m in _ORJSON_MAY_DIFFER.finditer(encoded))):
        items[i] = json.dumps(values[i])
    return items


def _bools(values: Sequence[Any], words: dict[Any, str]) -> list[str]:
    try:
        return list(map(words.__getitem__, values))
    except (KeyError, TypeError):  # a driver's other truth values: what bool() says
        return [words[None if v is None else bool(v)] for v in values]


def _first_specials(joined: str) -> list[int]:
    """Offsets in `joined` (values apart by _SEP) of the first of each special
    character in a value that holds it: str.find's C scan (a regular expression's
    character class scans several times slower), then one step per value found."""
    found = []
    for char in _CSV_SPECIAL:
        at = joined.find(char)
        while at >= 0:
            found.append(at)
            end = joined.find(_SEP, at)
            at = -1 if end < 0 else joined.find(char, end)
    return found


def _csv_text(values: Sequence[Any]) -> Sequence[str]:
    texts = ["" if v is None else v for v in values] if None in values else values
    try:
        joined = _SEP.join(texts)  # "\x00": in no ledger text (ledger.columns)
    except TypeError:  # a value that is not text: written as str() writes it
        texts = [str(v) for v in texts]
        joined = _SEP.join(texts)
    found = _first_specials(joined)
    if not found:
        return texts
    out = list(texts)
    for i in _holding(texts, found):  # the values the special characters are in
        out[i] = '"' + out[i].replace('"', '""') + '"'
    return out


def _csv_column(kind: Kind, values: Sequence[Any]) -> Sequence[str]:
    if kind == "text":
        return _csv_text(values)
    if kind == "bool":
        return _bools(values, _CSV_BOOL)
    items = _number_items(values)
    return list(map(_CSV_NUMBER.get, items, items))


def _text_items(values: Sequence[Any]) -> list[str]:
    """Each text's JSON text (None's: null): the encoder's own escaping of a string
    (ensure_ascii=False), one C call per value with no array to join and split."""
    try:
        return list(map(_ENCODE_TEXT, values))
    except TypeError:  # a None, or a value that is not text
        pass
    try:
        return ["null" if v is None else _ENCODE_TEXT(v) for v in values]
    except TypeError:  # not text: written as json writes it
        return _items(values)


def _json_column(kind: Kind, values: Sequence[Any]) -> Sequence[str]:
    if kind == "bool":
        return _bools(values, _JSON_BOOL)
    return _number_items(values) if kind == "number" else _text_items(values)


def csv_header() -> str:
    return ",".join(FILE_FIELDS) + "\r\n"


def csv_lines(cols: Sequence[Sequence[Any]]) -> str:
    """The CSV lines of a chunk's FILE_FIELDS columns, each ending in CRLF."""
    if not cols[0]:
        return ""
    texts = [_csv_column(kind, values) for kind, values in zip(KINDS, cols, strict=True)]
    return "\r\n".join(map(",".join, zip(*texts, strict=True))) + "\r\n"


def json_objects(cols: Sequence[Sequence[Any]]) -> str:
    """The JSON objects of a chunk's FILE_FIELDS columns, one a line, apart by ",\\n"."""
    if not cols[0]:
        return ""
    rows = len(cols[0])
    pieces: list[Sequence[str]] = []  # prefix, values, prefix, values, ...
    for kind, prefix, values in zip(KINDS, _JSON_PREFIXES, cols, strict=True):
        pieces += ([prefix] * rows, _json_column(kind, values))
    return "},\n".join(map("".join, zip(*pieces, strict=True))) + "}"


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3


def keep_freed_memory() -> None:
    """Let this process's C allocator keep what an export frees for its next chunk.

    Each chunk's texts (megabytes, a JSON row alone over the 512 bytes Python's own
    allocator serves) are freed and made again a moment later. glibc gives the top
    of its heap back to the system as soon as 128 KB of it is free, and maps each
    larger block on its own, so every chunk paid its memory again in page faults
    (a million rows: 219,000 for CSV, 764,000 for JSON). With both thresholds raised
    here (for good: an export's process ends with it) the peak is what it was, and
    CSV takes 21,000; JSON's other faults were its arenas (see _JSON_PREFIXES).
    Elsewhere than glibc, nothing changes."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): its own policy
        return
    mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    mallopt(_M_MMAP_THRESHOLD, 32 << 20)  # glibc's largest


@contextmanager
def no_cycle_collection() -> Iterator[None]:
    """An export makes millions of tuples and no reference cycle: the cycle
    collector, run every few hundred new tuples, took a tenth of its time."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def write_csv(chunks: Iterable[Sequence[tuple[Any, ...]]], out: TextIO) -> None:
    """CSV with a header row (what `csv.DictWriter` writes), one write per chunk."""
    with no_cycle_collection():
        out.write(csv_header())
        for rows in chunks:
            out.write(csv_lines(columns_of(rows)))


def write_json(chunks: Iterable[Sequence[tuple[Any, ...]]], out: TextIO) -> None:
    """A JSON array, one object per line, written a chunk at a time (never built whole)."""
    with no_cycle_collection():
        out.write("[")
        separator = "\n"
        for rows in chunks:
            if rows:
                out.write(separator + json_objects(columns_of(rows)))
                separator = ",\n"
        out.write("\n]\n")

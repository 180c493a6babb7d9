"""Poison-proof intake (issue 10) as properties of the REAL watcher path into a
REAL SQLite ledger: names as bytes, sidecar and `_defaults.json` contents,
leftovers in `var/work/`, a watcher killed mid-drop, an unreadable folder.

Each example runs in its own fresh folders (tempfile, not pytest's tmp_path)
with its own ledger file, drops a whole LIST of files at once, runs the
watcher (no worker: `queued` is a fine outcome here) and checks:

- every candidate file (`scheduler.names.is_candidate_name` on the decoded
  name, no hidden folder on its way) has exactly one row, under the path the
  `%XX` rule shows (tests/support/poison.py: `shown`), in state queued,
  duplicate or failed; a failed row has a reason, a message and a
  NAME.error.json in var/failed/ whose name fits NAME_MAX;
- nothing is left in var/work/ that a queued row does not own, and no
  candidate is left in the inbox;
- the watcher's thread is alive, and a good file dropped AFTER the drop is
  still recorded.

After a crash (files left in var/work/, a watcher killed with SIGKILL) the
start must not raise and every file must end with one row; a file recovered
from its claim is matched by its name (its folder only when the claim
folder's name could carry it), or, for a name too long for var/work/'s own
names, by the shortened form (`…~hash`) a claim gives it.

Shrinking is off (a failing example costs a bounded wait per step); the
falsifying example is printed instead, its bytes abridged. Known poison comes
first as explicit examples, so a product that is not poison-proof yet fails
fast.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import unicodedata
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from reka_ingest.core.settings import IngestSettings, load_settings
from reka_ingest.files.sidecars import candidates
from reka_ingest.ledger import Ledger, open_ledger
from reka_ingest.ledger.queries import list_files
from reka_ingest.ledger.schema import File
from scheduler.claim import inbox_tag
from scheduler.names import is_candidate_name, is_hidden
from scheduler.watcher import Watcher
from tests.scheduler.conftest import FAST
from tests.support.images import image_bytes
from tests.support.poison import (
    DEEP_ARRAY,
    DEEP_ARRAY_CLOSED,
    DEEP_OBJECT_CLOSED,
    DEEP_OBJECT_OPEN,
    NAME_MAX,
    files_under,
    fits,
    is_strict_json,
    read_reason_file,
    short,
    shown,
    wait_until,
    write_at,
)

REPO = Path(__file__).resolve().parents[2]
SETTLE_SECONDS = 12.0  # a whole drop of <= 20 small files is recorded well within this
# Images wait INGEST_SIDECAR_WAIT for a sidecar written after them (5 s by default);
# these tests use the scheduler suite's short wait (FAST), also in the child processes.
SIDECAR_WAIT = str(FAST.get("sidecar_wait", 0.5))
SETTLED = frozenset({"queued", "duplicate", "failed"})
NOBODY = 65534

PROPERTY = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    phases=[Phase.explicit, Phase.generate],  # no shrinking: see the module doc
    database=None,
    print_blob=True,
)


@functools.cache
def jpeg(seed: int) -> bytes:
    return image_bytes(seed, size=(24, 16))


def _data(raw: bytes) -> str:
    return repr(raw) if len(raw) <= 40 else f"<{len(raw)} bytes: {raw[:24]!r}...>"


class Compact:
    """Falsifying examples printed by our `__repr__`, bytes bounded (hypothesis
    would print every field whole: a 100,000-deep sidecar, a JPEG)."""

    def _repr_pretty_(self, p: Any, _cycle: bool) -> None:
        p.text(repr(self))


# --- one example's world ----------------------------------------------------------------


@dataclass
class Box:
    root: str
    settings: IngestSettings
    ledger: Ledger
    sent: list[int] = field(default_factory=list)

    @property
    def inbox(self) -> bytes:
        return os.fsencode(os.path.realpath(self.settings.inbox))

    def rows(self) -> list[File]:
        return list_files(self.ledger)

    def report(self) -> str:
        """What is where: for failure messages."""
        rows = [(r.path, r.state, r.reason, (r.message or "")[:120]) for r in self.rows()]
        inbox = [p[len(self.inbox) + 1 :] for p in files_under(self.inbox)]
        work = files_under(self.settings.work_dir)
        log = Path(self.root, "watch.log")
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        return f"rows:{short(rows)}\ninbox left:{short(inbox)}\nwork left:{short(work)}" + (
            f"\nwatch.log (tail):\n{tail}" if tail else ""
        )


def make_settings(root: str) -> IngestSettings:
    ingest = load_settings(
        data_dir=os.path.join(root, "var"),
        inbox=os.path.join(root, "inbox"),
        log_format="console",
        **{**FAST, "sidecar_wait": float(SIDECAR_WAIT)},
    ).ingest
    ingest.inbox.mkdir(parents=True, exist_ok=True)
    ingest.data_dir.mkdir(parents=True, exist_ok=True)
    return ingest


@contextmanager
def box() -> Iterator[Box]:
    """Fresh folders and a fresh ledger for one example; all removed after."""
    root = tempfile.mkdtemp(prefix="reka-poison-")
    ingest = make_settings(root)
    ledger = open_ledger(ingest.ledger_url)
    try:
        yield Box(root, ingest, ledger)
    finally:
        ledger.dispose()
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def watching(b: Box) -> Iterator[Watcher]:
    watcher = Watcher(b.settings, b.ledger, b.sent.append)
    watcher.start()  # must not raise, whatever is in the inbox or in var/work
    try:
        yield watcher
    finally:
        watcher.stop()


def is_candidate_rel(rel: bytes) -> bool:
    """A path below the inbox the watcher must take (decoded as os.fsdecode does)."""
    *folders, name = rel.split(b"/")
    return is_candidate_name(os.fsdecode(name)) and not any(
        is_hidden(os.fsdecode(p)) for p in folders
    )


def candidate_rows(rows: list[File], expected: Counter[str]) -> list[File]:
    return [r for r in rows if r.path in expected]


def settled(b: Box, expected: Counter[str]) -> bool:
    """Every expected path has its rows, and every final one has been moved."""
    rows = b.rows()
    got = Counter(r.path for r in candidate_rows(rows, expected))
    if any(got[p] < n for p, n in expected.items()):
        return False
    return all(r.final_path is not None for r in rows if r.state in ("failed", "duplicate"))


def wait_settled(b: Box, expected: Counter[str], what: str) -> None:
    wait_until(
        lambda: settled(b, expected),
        SETTLE_SECONDS,
        f"{what}: a settled row for each of {sum(expected.values())} candidate files",
        detail=lambda: f"expected:{short(sorted(expected))}\n{b.report()}",
    )


def check_failed_row(b: Box, row: File) -> None:
    where = (row.path, row.reason, row.message)
    assert row.reason, where
    assert row.message, where
    error_file = row.final_path
    assert error_file is not None and error_file.endswith(".error.json"), where
    assert os.path.isfile(error_file), (where, error_file)
    assert fits(error_file), (where, error_file, len(os.path.basename(os.fsencode(error_file))))
    failed_root = os.path.join(os.path.realpath(b.settings.failed_path), "")
    assert os.path.realpath(error_file).startswith(failed_root), (where, error_file)
    record = read_reason_file(error_file)
    assert record["path"] == row.path, (where, record)
    assert (record["reason"], record["message"]) == (row.reason, row.message), (where, record)


def check_outcome(b: Box, expected: Counter[str]) -> list[File]:
    """The invariants of the module doc, for one settled drop; returns the rows."""
    rows = b.rows()
    got = Counter(r.path for r in candidate_rows(rows, expected))
    assert got == expected, (
        f"rows by shown path differ\n  missing: {expected - got}\n  extra: {got - expected}\n"
        f"{b.report()}"
    )
    for row in rows:
        row.path.encode("utf-8")  # a shown path is valid text: no lone surrogate
        if row.path not in expected:
            # Not a candidate (a sidecar recorded on its own, say): only as a failure.
            assert (row.state, bool(row.reason)) == ("failed", True), (row.path, row.state)
        assert row.state in SETTLED, (row.path, row.state, row.reason, row.message)
        if row.state == "failed":
            check_failed_row(b, row)
        elif row.state == "duplicate":
            assert row.final_path is not None and os.path.lexists(row.final_path), row.path
            assert fits(row.final_path), (row.path, row.final_path)
        else:
            assert os.path.isfile(row.work_path), (row.path, row.work_path)
    # Nothing in var/work/ but what a queued row owns (its bytes and its sidecar).
    owned: set[str] = set()
    for row in rows:
        if row.state == "queued":
            folder, name = os.path.split(row.work_path)
            owned.add(row.work_path)
            owned.update(os.path.join(folder, c) for c in candidates(name))
    stray = [p for p in files_under(b.settings.work_dir) if os.fsdecode(p) not in owned]
    assert not stray, f"left in var/work/ with no queued row:{short(stray)}\n{b.report()}"
    # No candidate left behind in the inbox.
    left = [p[len(b.inbox) + 1 :] for p in files_under(b.inbox)]
    stuck = [p for p in left if is_candidate_rel(p)]
    assert not stuck, f"candidates still in the inbox:{short(stuck)}\n{b.report()}"
    return rows


def check_intake_goes_on(b: Box, watcher: Watcher, rel: bytes = b"after-the-drop.jpg") -> File:
    """The watcher's thread lives on, and a good file dropped now is recorded."""
    thread = watcher._thread
    assert thread is not None and thread.is_alive(), "the watcher's thread died"
    write_at(b.inbox, rel, jpeg(987_654))
    path = shown(rel)
    wait_until(
        lambda: any(r.path == path for r in b.rows()),
        SETTLE_SECONDS,
        f"a row for {path!r}, dropped after the drop",
        detail=b.report,
    )
    return next(r for r in b.rows() if r.path == path)


# --- names as bytes ---------------------------------------------------------------------

NAME_BYTE = st.integers(1, 255).filter(lambda c: c != 0x2F)  # anything but '/' and NUL
NO_NAME = frozenset({b".", b".."})
RAW_NAMES = (
    st.lists(NAME_BYTE, min_size=1, max_size=NAME_MAX).map(bytes).filter(lambda n: n not in NO_NAME)
)
EXTENSIONS = st.sampled_from([b"", b".jpg", b".JPG", b".png", b".jpeg"])
NOT_UTF8 = st.lists(st.integers(0x80, 0xFF), min_size=1, max_size=6).map(bytes)


@st.composite
def mixed_names(draw: st.DrawFn) -> bytes:
    """Plain text around bytes that are not UTF-8, with an image extension."""
    head = draw(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20))
    name = head.replace("/", "_").encode() + draw(NOT_UTF8) + draw(EXTENSIONS)
    return name if name not in NO_NAME else b"x" + name


@st.composite
def long_names(draw: st.DrawFn) -> bytes:
    """Names of 240..255 bytes: ASCII, multi-byte UTF-8, or not UTF-8."""
    size = draw(st.integers(240, NAME_MAX))
    ext = draw(EXTENSIONS)
    room = size - len(ext) - 1
    kind = draw(st.sampled_from(["ascii", "utf8", "raw"]))
    if kind == "ascii":
        body = b"L" * room
    elif kind == "utf8":
        char = draw(st.sampled_from(["é", "写", "😀", "ñ"])).encode()
        body = char * (room // len(char))
        body += b"u" * (room - len(body))
    else:
        body = bytes(draw(st.lists(NAME_BYTE, min_size=room, max_size=room)))
    return b"L" + body + ext


TEXT_NAMES = (
    st.text(
        st.characters(exclude_categories=["Cs"], exclude_characters="/\x00"),
        min_size=1,
        max_size=40,
    )
    .map(lambda t: t.encode())
    .filter(lambda n: n not in NO_NAME and len(n) <= NAME_MAX)
)
CONTROL_NAMES = st.text(
    st.sampled_from([chr(c) for c in range(1, 32)] + ["\x7f", "\x85", "a", " ", "."]),
    min_size=1,
    max_size=16,
).map(lambda t: t.encode() + b".jpg")
COMPOSABLE = "eaunAcoé한글가ḱ"


@st.composite
def nfc_nfd_pair(draw: st.DrawFn) -> list[bytes]:
    """The same text in NFC and in NFD: two names, two files."""
    text = draw(st.text(st.sampled_from(COMPOSABLE), max_size=12)) + "é"
    nfc, nfd = unicodedata.normalize("NFC", text), unicodedata.normalize("NFD", text)
    return [nfc.encode() + b".jpg", nfd.encode() + b".jpg"]


NAMES = st.one_of(
    RAW_NAMES.map(lambda n: [n]),
    mixed_names().map(lambda n: [n]),
    long_names().map(lambda n: [n]),
    TEXT_NAMES.map(lambda n: [n]),
    CONTROL_NAMES.map(lambda n: [n]),
    nfc_nfd_pair(),
)
FOLDER_NAMES = st.one_of(RAW_NAMES, mixed_names(), long_names(), TEXT_NAMES)
FOLDERS = st.lists(FOLDER_NAMES, min_size=1, max_size=2).map(b"/".join)
CONTENTS = st.one_of(
    st.integers(0, 5).map(jpeg),  # few seeds: the same bytes twice makes a duplicate
    st.just(b""),  # empty_file
    st.binary(min_size=1, max_size=64),  # not an image: the worker's check, queued here
)


@dataclass(frozen=True, repr=False)
class Drop(Compact):
    """Folders (b"/"-joined relative paths) and files (folder number, name, bytes);
    folder number 0 is the inbox itself, n is folders[n - 1]."""

    folders: tuple[bytes, ...]
    files: tuple[tuple[int, bytes, bytes], ...]

    def __repr__(self) -> str:
        files = ", ".join(f"({i}, {n!r}, {_data(d)})" for i, n, d in self.files)
        return f"Drop(folders={self.folders!r}, files=[{files}])"


@st.composite
def drops(draw: st.DrawFn, max_files: int = 20) -> Drop:
    folders = tuple(draw(st.lists(FOLDERS, max_size=3)))
    files: list[tuple[int, bytes, bytes]] = []
    for names in draw(st.lists(NAMES, min_size=1, max_size=max_files)):
        where = draw(st.integers(0, len(folders)))
        files.extend((where, name, draw(CONTENTS)) for name in names)
    return Drop(folders, tuple(files[:max_files]))


def write_drop(inbox: bytes, drop: Drop) -> list[tuple[bytes, bytes]]:
    """Write a drop; returns (relative path, bytes) of what was written.

    A name already used in its folder (or used by a folder) is skipped. Sidecar
    names go first, so no image is ever seen before its sidecar.
    """
    folders = (b"", *drop.folders)
    made: set[bytes] = set()
    for folder in drop.folders:
        parts = folder.split(b"/")
        made.update(b"/".join(parts[: i + 1]) for i in range(len(parts)))
    planned: list[tuple[bytes, bytes]] = []
    taken = set(made)
    for where, name, data in drop.files:
        folder = folders[where]
        rel = folder + b"/" + name if folder else name
        if rel in taken:
            continue
        taken.add(rel)
        planned.append((rel, data))
    for folder in sorted(made):
        os.makedirs(os.path.join(inbox, folder), exist_ok=True)
    planned.sort(key=lambda p: not p[0].lower().endswith(b".json"))
    for rel, data in planned:
        write_at(inbox, rel, data)
    return planned


def expected_rows(written: list[tuple[bytes, bytes]]) -> Counter[str]:
    return Counter(shown(rel) for rel, _ in written if is_candidate_rel(rel))


KNOWN_POISON_NAMES = Drop(
    folders=(b"d\xff\xfe", b"L" * 254, b"caf\xc3\xa9/sub\x01dir"),
    files=(
        (0, b"caf\xe9.jpg", jpeg(1)),  # not UTF-8 -> caf%E9.jpg
        (0, b"plain.jpg", jpeg(2)),
        (0, b"\xe9" + b"a" * 250, b""),  # shown as "%E9aaa..." (253 chars) ...
        (0, b"%E9" + b"a" * 250, b""),  # ... and so is this one: same failed/ name
        (0, b"L" * 251 + b".jpg", b""),  # 255 bytes, failed: its .error.json must fit
        (1, b"in-bad-folder.jpg", jpeg(3)),
        (1, b"\xff", jpeg(3)),  # the same bytes: a duplicate, moved to done/
        (2, b"M" * 251 + b".jpg", jpeg(4)),
        (3, b"new\nline\ttab.jpg", jpeg(5)),
        (0, "café.jpg".encode(), b"x"),
        (0, unicodedata.normalize("NFD", "café.jpg").encode(), b"y"),
    ),
)


@pytest.mark.timeout(110)
@settings(PROPERTY, max_examples=14)
@given(drop=drops(), before_start=st.booleans())
@example(drop=KNOWN_POISON_NAMES, before_start=False)
@example(drop=KNOWN_POISON_NAMES, before_start=True)
def test_any_names_get_one_row_each_shown_by_the_rule_and_intake_goes_on(
    drop: Drop, before_start: bool
) -> None:
    with box() as b:
        written = write_drop(b.inbox, drop) if before_start else []
        with watching(b) as watcher:
            if not before_start:
                written = write_drop(b.inbox, drop)
            expected = expected_rows(written)
            wait_settled(b, expected, "names as bytes")
            check_outcome(b, expected)
            late = check_intake_goes_on(b, watcher)
            assert late.state == "queued", (late.path, late.state, late.reason, late.message)


# --- sidecar and _defaults.json contents -----------------------------------------------------


@dataclass(frozen=True, repr=False)
class Content(Compact):
    """A sidecar's bytes and what must come of them: "object" (valid: the image is
    queued with exactly `value`), "fail" (bad_sidecar), "either" (queued with
    metadata that is valid JSON, or bad_sidecar)."""

    raw: bytes
    expect: str
    value: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"Content({_data(self.raw)}, {self.expect!r})"


TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=12)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
)
VALUES = st.recursive(
    SCALARS,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(TEXT, kids, max_size=3),
    max_leaves=12,
)
# Free keys ("x-...") pass through untouched; two checked fields with their right types.
OBJECTS = st.builds(
    lambda checked, free: {**checked, **free},
    st.fixed_dictionaries({}, optional={"caption": TEXT, "index": st.booleans()}),
    st.dictionaries(TEXT.map(lambda k: "x-" + k), VALUES, max_size=4),
)


@st.composite
def valid_objects(draw: st.DrawFn) -> Content:
    obj = draw(OBJECTS)
    text = json.dumps(
        obj, ensure_ascii=draw(st.booleans()), indent=draw(st.sampled_from([None, 2]))
    )
    return Content(text.encode(), "object", obj)


@st.composite
def truncated(draw: st.DrawFn) -> Content:
    raw = json.dumps(draw(OBJECTS.filter(bool)), ensure_ascii=False).encode()
    return Content(raw[: draw(st.integers(0, len(raw) - 1))], "fail")


NOT_OBJECTS = [
    b"null",
    b"[]",
    b"1e400",
    b'"text"',
    b"3",
    b"true",
    b"[1, 2]",
    b"",
    b"  \n",
    DEEP_ARRAY,
    DEEP_ARRAY_CLOSED,
    DEEP_OBJECT_OPEN,
    b'{"recorded_timestamp_utc": "noon"}',
    b'{"caption": 5}',
    b'{"index": "no"}',
    '{"x-a": 1}'.encode("utf-16"),
    b'{"x-a": "caf\xe9"}',
]
EITHER = [
    b'{"x-a": NaN}',
    b'{"x-a": Infinity}',
    b'{"x-a": -Infinity}',
    b'{"x-n": 1e400}',
    b'{"x-n": [-1e400]}',
    b'{"x-n": ' + b"9" * 5000 + b"}",
    DEEP_OBJECT_CLOSED,
    b'{"x-d": ' + DEEP_ARRAY_CLOSED + b"}",
    b'\xef\xbb\xbf{"x-a": 1}',
    b'{"x-a": 1, "x-a": 2}',
    b'{"x-s": "\\ud800"}',  # a lone surrogate, by a valid JSON escape
    b'{"x-z": "nul\\u0000here"}',
]
CONTENT = st.one_of(
    valid_objects(),
    truncated(),
    st.sampled_from(NOT_OBJECTS).map(lambda raw: Content(raw, "fail")),
    st.binary(max_size=40).map(lambda raw: Content(b"\xff" + raw, "fail")),  # not UTF-8
    VALUES.filter(lambda v: not isinstance(v, dict)).map(
        lambda v: Content(json.dumps(v).encode(), "fail")
    ),
    st.sampled_from(EITHER).map(lambda raw: Content(raw, "either")),
)

SIDE_FOLDERS = (b"", b"a", b"a/b", b"c")
CHAIN = {0: (0,), 1: (0, 1), 2: (0, 1, 2), 3: (0, 3)}  # the _defaults.json layers of each


@dataclass(frozen=True, repr=False)
class SidecarDrop(Compact):
    defaults: tuple[Content | None, ...]  # one per SIDE_FOLDERS
    images: tuple[tuple[int, bool, Content | None], ...]  # folder, NAME.json style, sidecar

    def __repr__(self) -> str:
        return f"SidecarDrop(defaults={self.defaults!r}, images={self.images!r})"


@st.composite
def sidecar_drops(draw: st.DrawFn) -> SidecarDrop:
    maybe = st.one_of(st.none(), st.none(), CONTENT)
    defaults = tuple(draw(maybe) for _ in SIDE_FOLDERS)
    images = draw(
        st.lists(
            st.tuples(st.integers(0, 3), st.booleans(), st.one_of(st.none(), CONTENT)),
            min_size=1,
            max_size=10,
        )
    )
    return SidecarDrop(defaults, tuple(images))


def image_rel(i: int, folder: int) -> bytes:
    name = b"img%d.jpg" % i
    return SIDE_FOLDERS[folder] + b"/" + name if SIDE_FOLDERS[folder] else name


def expectation(layers: list[Content | None]) -> tuple[str, dict[str, Any] | None]:
    present = [c for c in layers if c is not None]
    if any(c.expect == "fail" for c in present):
        return "fail", None
    if any(c.expect == "either" for c in present):
        return "either", None
    merged: dict[str, Any] = {}
    for c in present:
        merged.update(c.value or {})
    return "object", merged


def check_sidecar_row(row: File, layers: list[Content | None]) -> None:
    expect, merged = expectation(layers)
    where = (row.path, row.state, row.reason, (row.message or "")[:200], layers)
    if row.state == "failed":
        assert expect != "object", where
        assert row.reason == "bad_sidecar" and row.message, where
        return
    assert expect != "fail", where
    assert row.state == "queued", where
    if expect == "object":
        assert merged is not None
        metadata = {k: v for k, v in merged.items() if k != "index"} or None
        assert row.sidecar == metadata, where
        assert row.index_flag == merged.get("index", True), where
    else:
        assert row.sidecar is None or isinstance(row.sidecar, dict), where
        assert is_strict_json(row.sidecar), where


def write_sidecar_drop(inbox: bytes, drop: SidecarDrop) -> dict[bytes, list[Content | None]]:
    """Defaults first, then sidecars, then images; returns each image's layers."""
    for rel_dir in SIDE_FOLDERS:
        os.makedirs(os.path.join(inbox, rel_dir), exist_ok=True)
    for rel_dir, content in zip(SIDE_FOLDERS, drop.defaults, strict=True):
        if content is not None:
            write_at(inbox, os.path.join(rel_dir, b"_defaults.json"), content.raw)
    layers: dict[bytes, list[Content | None]] = {}
    for i, (where, stem_style, side) in enumerate(drop.images):
        rel = image_rel(i, where)
        layers[rel] = [drop.defaults[j] for j in CHAIN[where]] + [side]
        if side is not None:
            side_rel = rel[: -len(b".jpg")] + b".json" if stem_style else rel + b".json"
            write_at(inbox, side_rel, side.raw)
    for i, (where, _, _) in enumerate(drop.images):
        write_at(inbox, image_rel(i, where), jpeg(100 + i))
    return layers


def _c(raw: bytes, expect: str, value: dict[str, Any] | None = None) -> Content:
    return Content(raw, expect, value)


KNOWN_POISON_SIDECARS = SidecarDrop(
    defaults=(
        None,
        _c(b'{"site_id": "north"}', "object", {"site_id": "north"}),
        None,
        _c(DEEP_ARRAY, "fail"),
    ),
    images=(
        (0, False, _c(DEEP_ARRAY, "fail")),
        (0, False, _c(b"null", "fail")),
        (0, True, _c(b"[]", "fail")),
        (0, False, _c(b"1e400", "fail")),
        (0, False, _c(b'{"x-n": 1e400}', "either")),
        (0, True, _c(b'{"x-s": "\\ud800"}', "either")),
        (0, False, _c(DEEP_OBJECT_CLOSED, "either")),
        (1, False, _c(b'{"caption": "fine"}', "object", {"caption": "fine"})),
        (2, False, None),
        (3, False, None),  # under the deep _defaults.json: bad_sidecar
        (3, False, _c(b"{}", "object", {})),
        (0, False, None),
    ),
)


@pytest.mark.timeout(110)
@settings(PROPERTY, max_examples=14)
@given(drop=sidecar_drops(), before_start=st.booleans())
@example(drop=KNOWN_POISON_SIDECARS, before_start=True)
def test_any_sidecar_or_defaults_content_gives_metadata_or_bad_sidecar_alone(
    drop: SidecarDrop, before_start: bool
) -> None:
    with box() as b:
        layers = write_sidecar_drop(b.inbox, drop) if before_start else {}
        with watching(b) as watcher:
            if not before_start:
                layers = write_sidecar_drop(b.inbox, drop)
            expected = Counter(shown(rel) for rel in layers)
            wait_settled(b, expected, "sidecars")
            rows = {r.path: r for r in check_outcome(b, expected)}
            for rel, its_layers in layers.items():
                check_sidecar_row(rows[shown(rel)], its_layers)
            # A new folder under the inbox's own defaults (if any): intake goes on.
            late = check_intake_goes_on(b, watcher, b"z/after.jpg")
            check_sidecar_row(late, [drop.defaults[0], None])


# --- whatever a crash left in var/work/ -------------------------------------------------


@dataclass(frozen=True, repr=False)
class ClaimLeft(Compact):
    """One claim folder left behind: `<tag>-<token><suffix>/NAME...`; `restores` is
    the relative folder its suffix names (None when only the name can be known)."""

    token: str
    suffix: bytes
    restores: bytes | None
    files: tuple[tuple[bytes, bytes], ...]  # (name, bytes)
    sidecars: tuple[tuple[bytes, Content], ...]  # (image name, content) as NAME.json

    def __repr__(self) -> str:
        files = ", ".join(f"({n!r}, {_data(d)})" for n, d in self.files)
        return (
            f"ClaimLeft({self.token!r}, {self.suffix!r}, restores={self.restores!r}, "
            f"files=[{files}], sidecars={self.sidecars!r})"
        )


CLEAN_DIRS = st.lists(
    st.text(st.sampled_from("abcxyz_- ñ写"), min_size=1, max_size=12).filter(
        lambda t: t.strip() and not t.startswith(".")
    ),
    min_size=1,
    max_size=2,
).map(lambda parts: "/".join(parts).encode())


def b64(raw: bytes) -> bytes:
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


SUFFIXES = st.one_of(
    st.just((b"", b"")),
    CLEAN_DIRS.map(lambda rel: (b"." + b64(rel), rel)),
    RAW_NAMES.filter(lambda n: len(b64(n)) < 200).map(lambda n: (b"." + b64(n), None)),
    st.sampled_from([b".!!not-base64!!", b".\xff\xfe", b"\xff", b"..", b".===="]).map(
        lambda s: (s, None)
    ),
)
LEFT_NAMES = st.one_of(RAW_NAMES, mixed_names(), long_names(), TEXT_NAMES, CONTROL_NAMES).filter(
    lambda n: is_candidate_name(os.fsdecode(n))
)


def sole_owner(name: bytes, names: list[bytes]) -> bool:
    """Whether `name` is the only image in the folder that could own NAME.json (the
    watcher never puts two such images in one claim folder)."""
    side = name + b".json"
    return [m for m in names if side in (m + b".json", os.path.splitext(m)[0] + b".json")] == [name]


@st.composite
def claim_lefts(draw: st.DrawFn) -> ClaimLeft:
    suffix, restores = draw(SUFFIXES)
    names = draw(st.lists(LEFT_NAMES, min_size=1, max_size=5, unique=True))
    files = tuple((n, draw(CONTENTS)) for n in names)
    sidecars = tuple(
        (n, draw(CONTENT))
        for n in names
        if len(n) + 5 <= NAME_MAX and sole_owner(n, names) and draw(st.booleans())
    )
    token = draw(st.text("0123456789abcdef", min_size=1, max_size=17))
    return ClaimLeft(token, suffix, restores or None, files, sidecars)


def may_be_shortened(name: str) -> bool:
    """A name too long for the work area's own naming (room for `NAME.json` beside
    it): recovery may record it under the shortened name a claim would have given."""
    return len(name.encode()) > NAME_MAX - len(".json")


def shortened_from(base: str, name: str) -> bool:
    """`base` is `name` shortened: it fits, is marked as shortened, starts like it,
    and is a sidecar's name only if `name` is one."""
    sidecar = base.lower().endswith(".json") == name.lower().endswith(".json")
    return fits(base) and "~" in base and base[:16] == name[:16] and sidecar


def same_name(base: str, name: str) -> bool:
    return base == name or (may_be_shortened(name) and shortened_from(base, name))


def pair_rows(expected: Counter[str], paths: list[str]) -> tuple[list[str], list[str]]:
    """Pair expected paths with row paths after a crash: the same path, or (a file
    recovered from its claim, whose folder the claim folder's name may not carry)
    the same last name, or its shortened form for a name too long for work/.
    A maximum matching (small sizes: augmenting paths). Returns (expected paths
    with no row, row paths with no expected path)."""
    wanted = sorted(expected.elements())

    def fits_row(path: str, row: str) -> bool:
        return path == row or same_name(row.rsplit("/", 1)[-1], path.rsplit("/", 1)[-1])

    options = [[j for j, row in enumerate(paths) if fits_row(w, row)] for w in wanted]
    owner: dict[int, int] = {}  # row index -> wanted index

    def augment(i: int, seen: set[int]) -> bool:
        for j in options[i]:
            if j in seen:
                continue
            seen.add(j)
            if j not in owner or augment(owner[j], seen):
                owner[j] = i
                return True
        return False

    missing = [w for i, w in enumerate(wanted) if not augment(i, set())]
    extra = [row for j, row in enumerate(paths) if j not in owner]
    return missing, extra


def wait_paired(b: Box, expected: Counter[str], what: str) -> list[File]:
    """Wait until every expected path has its row (`pair_rows`) and final rows have
    moved; assert the pairing; return the rows recorded for expected files."""

    def done() -> bool:
        rows = b.rows()
        if pair_rows(expected, [r.path for r in rows])[0]:
            return False
        return all(r.final_path for r in rows if r.state in ("failed", "duplicate"))

    wait_until(
        done,
        SETTLE_SECONDS,
        f"{what}: a settled row for each of {sum(expected.values())} files",
        detail=lambda: f"expected:{short(sorted(expected))}\n{b.report()}",
    )
    rows = b.rows()
    missing, extra = pair_rows(expected, [r.path for r in rows])
    assert not missing, f"no row for:{short(missing)}\n{b.report()}"
    others = Counter(extra)
    recorded: list[File] = []
    for row in rows:
        if others[row.path] > 0:
            others[row.path] -= 1  # a row for no expected file (checked by check_outcome)
        else:
            recorded.append(row)
    return recorded


def plant(b: Box, lefts: list[ClaimLeft]) -> Counter[str]:
    """Put the leftovers in var/work/; returns the shown names expected as rows."""
    work = os.fsencode(os.path.realpath(b.settings.work_dir))
    os.makedirs(work, exist_ok=True)
    tag = inbox_tag(os.path.realpath(b.settings.inbox)).encode()
    names: Counter[str] = Counter()
    for n, left in enumerate(lefts):
        folder = os.path.join(work, tag + b"-" + left.token.encode() + b"%x" % n + left.suffix)
        os.mkdir(folder)
        for name, content in left.sidecars:
            write_at(folder, name + b".json", content.raw)
        for name, data in left.files:
            write_at(folder, name, data)
            names[shown(name)] += 1
    return names


KNOWN_LEFTOVERS = [
    ClaimLeft("0", b"", None, ((b"caf\xe9.jpg", jpeg(1)), (b"L" * 255, b"")), ()),
    ClaimLeft(
        "1",
        b"." + b64(b"d\xff/sub"),
        None,
        ((b"x\x01y.jpg", jpeg(2)),),
        ((b"x\x01y.jpg", _c(DEEP_ARRAY, "fail")),),
    ),
    ClaimLeft("2", b"." + b64(b"cam 1/day"), b"cam 1/day", ((b"ok.jpg", jpeg(3)),), ()),
    ClaimLeft("3", b".\xff\xfe", None, ((b"\xfe\xff", jpeg(4)),), ()),
]


@pytest.mark.timeout(100)
@settings(PROPERTY, max_examples=14)
@given(lefts=st.lists(claim_lefts(), min_size=1, max_size=4))
@example(lefts=KNOWN_LEFTOVERS)
def test_the_start_takes_whatever_a_crash_left_in_work_and_gives_each_file_a_row(
    lefts: list[ClaimLeft],
) -> None:
    with box() as b:
        names = plant(b, lefts)
        with watching(b) as watcher:  # the start itself must not raise
            recorded = wait_paired(b, names, "leftovers")
            assert len(recorded) == sum(names.values()), b.report()
            paths = {r.path for r in recorded}
            for left in lefts:
                if left.restores is None:
                    continue
                for name, _ in left.files:  # the folder its claim folder's name remembers
                    if may_be_shortened(shown(name)):
                        continue
                    assert shown(left.restores + b"/" + name) in paths, (left, b.report())
            check_outcome(b, Counter(r.path for r in recorded))
            check_intake_goes_on(b, watcher)


# --- a watcher killed mid-drop ------------------------------------------------------------


def watch_env(b: Box, redis_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "INGEST_INBOX": str(b.settings.inbox),
        "INGEST_DATA_DIR": str(b.settings.data_dir),
        "INGEST_REDIS_URL": redis_url,
        "INGEST_STABLE_INTERVAL": str(FAST["stable_interval"]),
        "INGEST_MIN_FILE_AGE": str(FAST["min_file_age"]),
        "INGEST_BATCH_MAX_WAIT": str(FAST["batch_max_wait"]),
        "INGEST_SCAN_INTERVAL": str(FAST["scan_interval"]),
        "INGEST_SIDECAR_WAIT": SIDECAR_WAIT,
        "INGEST_LOG_FORMAT": "json",
        "PYTHONPATH": str(REPO),
    }


def claimed_count(b: Box, written: list[tuple[bytes, bytes]]) -> int:
    return sum(
        1
        for rel, _ in written
        if is_candidate_rel(rel) and not os.path.lexists(os.path.join(b.inbox, rel))
    )


# Four drops and kill points besides the known poison: each example starts a real
# `reka-ingest watch` (seconds of imports) and kills it, about 8 s an example.
@pytest.mark.timeout(110)
@settings(PROPERTY, max_examples=4)
@given(drop=drops(max_files=10), kill_after=st.integers(1, 10))
@example(drop=KNOWN_POISON_NAMES, kill_after=2)
def test_a_watcher_killed_mid_drop_restarts_and_every_file_ends_with_a_row(
    drop: Drop, kill_after: int, redis_url: str
) -> None:
    with box() as b:
        written = write_drop(b.inbox, drop)
        expected = expected_rows(written)
        kill_at = min(kill_after, sum(expected.values()))
        log_path = Path(b.root, "watch.log")
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "reka_ingest.cli", "watch"],
                env=watch_env(b, redis_url),
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            with suppress(AssertionError):  # no kill point reached: kill it where it is
                wait_until(
                    lambda: (
                        proc.poll() is not None
                        or (kill_at > 0 and claimed_count(b, written) >= kill_at)
                        or (kill_at == 0 and b"watcher.started" in log_path.read_bytes())
                    ),
                    10.0,
                    "the kill point",
                    interval=0.002,
                )
            assert proc.poll() is None, f"the watcher died on its own\n{b.report()}"
            os.kill(proc.pid, signal.SIGKILL)  # our own child, by pid
            assert proc.wait(10) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
        with watching(b) as watcher:  # the next start must not raise
            recorded = wait_paired(b, expected, "after a kill -9 and a restart")
            assert len(recorded) == sum(expected.values()), b.report()
            check_outcome(b, Counter(r.path for r in recorded))
            check_intake_goes_on(b, watcher)


# --- an unreadable folder ------------------------------------------------------------------

# The suite runs as root, and root reads a mode-0 folder anyway: the watcher runs
# in a child that drops to `nobody` after importing what it needs (as in
# tests/worker/test_unreadable.py), and meets real EACCES from the kernel.
UNREADABLE_CHILD = """
import json, os, sys, time
import sqlite3, scheduler.inotify, sqlalchemy.dialects.sqlite.pysqlite  # before the uid drop
import alembic.command, alembic.config, alembic.script, alembic.runtime.migration  # a new ledger
from scheduler.watcher import Watcher
from reka_ingest.ledger import open_ledger
from reka_ingest.ledger.queries import list_files
from reka_ingest.core.settings import load_settings

root, uid, image = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3])
settings = load_settings(
    data_dir=os.path.join(root, "var"), inbox=os.path.join(root, "inbox"),
    log_format="console", stable_interval=0.2, min_file_age=0.3, batch_max_wait=0.2,
    scan_interval=1.0, sidecar_wait=float(sys.argv[4]),
).ingest
os.setgid(uid)
os.setuid(uid)
ledger = open_ledger(settings.ledger_url)
watcher = Watcher(settings, ledger, lambda _batch_id: None)
watcher.start()
inbox = str(settings.inbox)
later = os.path.join(inbox, "later")
os.mkdir(later)
with open(os.path.join(later, "x.jpg"), "wb") as fh:
    fh.write(image)
os.chmod(later, 0)
with open(os.path.join(inbox, "open", "after.jpg"), "wb") as fh:
    fh.write(image[::-1])
want = {"locked", "later", "open/good.jpg", "open/after.jpg"}
rows = {}
deadline = time.monotonic() + 15
while time.monotonic() < deadline:
    rows = {r.path.rstrip("/"): [r.state, r.reason, r.message] for r in list_files(ledger)}
    if want <= set(rows):
        break
    time.sleep(0.1)
alive = watcher._thread is not None and watcher._thread.is_alive()
watcher.stop()
ledger.dispose()
print("RESULT " + json.dumps({"uid": os.geteuid(), "rows": rows, "alive": alive}))
"""


@pytest.mark.timeout(60)
def test_an_unreadable_folder_gets_a_failed_row_and_stops_nothing() -> None:
    root = tempfile.mkdtemp(prefix="reka-unreadable-")
    try:
        Path(root).chmod(0o755)  # others may enter (mkdtemp makes it 0700)
        inbox, var = Path(root, "inbox"), Path(root, "var")
        (inbox / "open").mkdir(parents=True)
        var.mkdir()
        (inbox / "open" / "good.jpg").write_bytes(jpeg(1))
        (inbox / "locked").mkdir()
        (inbox / "locked" / "inside.jpg").write_bytes(jpeg(2))
        for p in (inbox, inbox / "open", inbox / "open" / "good.jpg", var):
            os.chown(p, NOBODY, NOBODY)
        (inbox / "locked").chmod(0)  # root's, mode 0: nobody cannot list it
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                UNREADABLE_CHILD,
                root,
                str(NOBODY),
                jpeg(3).hex(),
                SIDECAR_WAIT,
            ],
            capture_output=True,
            text=True,
            timeout=50,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            check=False,
        )
        assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
        line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
        out = json.loads(line[len("RESULT ") :])
        rows = out["rows"]
        assert out["uid"] == NOBODY  # the watcher really read without root's override
        assert out["alive"], "the watcher's thread died"
        for folder in ("locked", "later"):
            assert folder in rows, (folder, rows, done.stdout[-3000:])
            state, reason, message = rows[folder]
            assert (state, reason) == ("failed", "unreadable"), (folder, rows[folder])
            assert message, folder
        assert rows["open/good.jpg"][0] == "queued", rows
        assert rows["open/after.jpg"][0] == "queued", rows
    finally:
        shutil.rmtree(root, ignore_errors=True)  # root removes mode-0 folders too


# --- the setting ----------------------------------------------------------------------------


def test_sidecar_wait_is_a_setting_with_a_default_of_five_seconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("INGEST_SIDECAR_WAIT", raising=False)
    assert "sidecar_wait" in IngestSettings.model_fields
    assert load_settings().ingest.sidecar_wait == 5.0
    monkeypatch.setenv("INGEST_SIDECAR_WAIT", "2.5")
    assert load_settings().ingest.sidecar_wait == 2.5
    assert load_settings(sidecar_wait=1.0).ingest.sidecar_wait == 1.0

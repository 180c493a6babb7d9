"""What the watcher writes: new file rows and the batches that group them.

Content hash is identity: a file whose bytes match an earlier live row is
recorded as a `duplicate` of it at once (unless re-uploads are allowed), and
gets that row's `image_id` as soon as it is known. Several watchers may decide
at once on one ledger; `lock_content` makes those decisions take turns per
content hash (see there).

A file dropped again after it failed supersedes its failed row: "the same
file" is the same relative path in the same source root (the inbox, or a
scanned tree), whatever its bytes now are (a fixed file has new ones; one
failed for a cause since fixed, such as a wrong key, may have the same). The
earlier row becomes `superseded` (with `superseded_by` naming the new row): it
stays in history with its reason and message, and leaves the failed count;
`retry` no longer takes it. Only rows whose failure is settled (moved to
failed/ beside their NAME.error.json) are superseded; a row still being
finished is left to finish. A path holding a `%XX` escape names no one file (a
byte that is not UTF-8 is shown that way, and so is a name that really holds
those three characters), so such a path never supersedes: two different files
must never share one failure.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, insert, select, text, update
from sqlalchemy.engine import Connection, Dialect, Row
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import TextClause

from reka_ingest.core.states import NOT_ORIGINALS, BatchState, FileState, Origin, Reason
from reka_ingest.core.text import clean_text
from reka_ingest.files.outbox import ERROR_SUFFIX
from reka_ingest.files.sidecars import SIDECAR_SUFFIX
from reka_ingest.ledger.bulk import array_params, unnest_arrays, update_by_id
from reka_ingest.ledger.columns import MAX_KEY_BYTES, keyable, storable
from reka_ingest.ledger.db import IN_CHUNK, Ledger
from reka_ingest.ledger.schema import FAILED_ONLY, MAX_MESSAGE_CHARS, MAX_PATH_CHARS, Batch, File


@dataclass(frozen=True, slots=True)
class NewFile:
    """A whole, claimed, hashed file, ready to be recorded."""

    path: str  # as the user dropped it, relative to source_root
    source_root: str
    work_path: str  # where its bytes are now
    origin: Origin
    size: int
    mtime: float
    sha256: str | None
    seen_at: float
    sidecar: dict[str, object] | None = None
    index_flag: bool = True
    # Set when the file is already known to be bad (bad sidecar, empty, ...).
    reason: Reason | None = None
    message: str | None = None


def failed_file(
    *,
    path: str,
    source_root: str,
    work_path: str,
    origin: Origin,
    seen_at: float,
    reason: Reason,
    message: str,
) -> NewFile:
    """A file already known to fail, before its bytes were read: no size, no hash."""
    return NewFile(
        path=path,
        source_root=source_root,
        work_path=work_path,
        origin=origin,
        size=0,
        mtime=0.0,
        sha256=None,
        seen_at=seen_at,
        reason=reason,
        message=message,
    )


def excluded_file(
    *, path: str, source_root: str, work_path: str, origin: Origin, seen_at: float, rule: str
) -> NewFile:
    """A file (or a folder, `path` ending in `/`) INGEST_INCLUDE / INGEST_EXCLUDE leave
    out: recorded in place as `excluded`, never claimed, read or hashed; `rule` names
    the rule (`INGEST_EXCLUDE "*.tmp"`)."""
    return failed_file(
        path=path,
        source_root=source_root,
        work_path=work_path,
        origin=origin,
        seen_at=seen_at,
        reason=Reason.EXCLUDED,
        message=f"left in place by {rule}",
    )


@dataclass(frozen=True, slots=True)
class Recorded:
    """What became of one NewFile: queued (for batching) or already final."""

    file_id: int
    state: FileState
    size: int
    work_path: str  # which NewFile this is (skipped files leave gaps)
    duplicate_of: int | None = None
    extra: dict[str, object] = field(default_factory=dict)
    # Why a file failed at intake, as recorded (it may have been found here: `for_ledger`).
    reason: Reason | None = None
    message: str | None = None
    # Recorded before this call, its follow-up not done (see `record_files`): routed
    # like a new row, never counted as one.
    again: bool = False


# Above this many distinct hashes, one transaction takes the whole-intake lock
# instead of one lock per hash: PostgreSQL's shared lock table holds about
# `max_locks_per_transaction` (64 by default) locks per connection, and a burst
# of groups of 500 from a dozen watchers would fill it for every session.
HASH_LOCKS_MAX = 64
# The whole-intake lock, in the two-integer key space of advisory locks (apart
# from the one-bigint space of the per-hash locks and the migration lock).
_INTAKE_LOCK = (0x52_45_4B_41, 1)  # "REKA", intake


def content_lock_key(sha256: str) -> int:
    """The advisory lock key of one content hash: its first 64 bits, signed (bigint)."""
    try:
        head = bytes.fromhex(sha256[:16])
    except ValueError:
        head = b""
    if len(head) != 8:  # not a hex digest: any stable 64 bits of it will do
        head = hashlib.sha256(sha256.encode("utf-8", "surrogatepass")).digest()[:8]
    return int.from_bytes(head, "big", signed=True)


def lock_content(s: Session, hashes: Iterable[str]) -> None:
    """Wait for, and hold until `s` ends, the right to decide what these bytes are.

    Call it in a write transaction before reading which rows hold these hashes
    (intake's duplicate decision; anything that makes a row the live original
    of a hash or stops it being one); whoever holds it sees every decision made
    before it as committed, and no other decision about these hashes is made
    until it commits or rolls back.

    PostgreSQL: under READ COMMITTED two transactions can both read "no live
    row for this hash" and both insert one (two watchers sharing the ledger
    uploaded the same bytes twice). So each hash gets a transaction-scoped
    advisory lock (`pg_advisory_xact_lock` on `content_lock_key`), taken in
    ascending key order so two groups sharing hashes never wait on each other
    in a cycle, under a shared hold of the whole-intake lock; a group of more
    than `HASH_LOCKS_MAX` hashes takes the whole-intake lock exclusively
    instead (one lock, not hundreds). The read after it takes a new snapshot
    (READ COMMITTED, the default), so it sees what the previous holder wrote.

    SQLite: nothing to do. Every write transaction begins with `BEGIN
    IMMEDIATE` (reka_ingest.ledger.db), which takes the database's one write
    lock before the first read; a second intake waits at its BEGIN until the
    first has committed, then reads its rows.
    """
    bind = s.get_bind()
    if bind.dialect.name != "postgresql":
        return
    keys = sorted({content_lock_key(h) for h in hashes})
    if not keys:
        return
    whole = {"k1": _INTAKE_LOCK[0], "k2": _INTAKE_LOCK[1]}
    if len(keys) > HASH_LOCKS_MAX:
        s.execute(text("SELECT pg_advisory_xact_lock(:k1, :k2)"), whole)
        return
    s.execute(text("SELECT pg_advisory_xact_lock_shared(:k1, :k2)"), whole)
    # One round trip; a function scan yields the array's elements in order, so
    # the locks are taken in ascending key order.
    s.execute(
        text("SELECT pg_advisory_xact_lock(k) FROM unnest(CAST(:keys AS bigint[])) AS k"),
        {"keys": keys},
    )


def _row(f: NewFile, now: float) -> dict[str, Any]:
    """Every column of a new row, so one multi-row INSERT can carry many of them."""
    return {
        "path": f.path,
        "source_root": f.source_root,
        "work_path": f.work_path,
        "origin": f.origin,
        "size": f.size,
        "mtime": f.mtime,
        "sha256": f.sha256,
        "sidecar": f.sidecar,
        "index_flag": f.index_flag,
        "seen_at": f.seen_at,
        "updated_at": now,
        "attempts": 0,
        "polls": 0,
        "possible_duplicate": False,
        "state": _intake_state(f.reason),
        "reason": f.reason,
        "message": f.message,
        "duplicate_of": None,
        "superseded_by": None,
        "image_id": None,
        "image_url": None,
        # An excluded row is no outcome of work: no finish time (status's rate, time to finish).
        "finished_at": now if f.reason not in (None, Reason.EXCLUDED) else None,
    }


def _intake_state(reason: Reason | None) -> FileState:
    """A new row's state: queued, or final at once (failed, or left out by the filters)."""
    if reason is None:
        return FileState.QUEUED
    return FileState.EXCLUDED if reason is Reason.EXCLUDED else FileState.FAILED


# Every column `_row` fills, in its order.
_ROW_KEYS = tuple(_row(NewFile("", "", "", Origin.EVENT, 0, 0.0, None, 0.0), 0.0))


def for_ledger(f: NewFile) -> NewFile:
    """`f` with every text field storable: names shown by the `%XX` rule, no NUL, bounded.

    A claimed file's work path is already plain text (the claim names it); an
    entry recorded in place keeps its real path in the file system, and its row
    the shown form. A work path too long to index is stored by its `keyable`
    form, which names no file: such a file, unless already failed, fails alone
    (`refused_path`), on every ledger alike.
    """
    work_path = keyable(f.work_path)
    if (
        work_path is f.work_path
        and storable(f.path, MAX_PATH_CHARS) is f.path
        and storable(f.source_root, MAX_PATH_CHARS) is f.source_root
        and (f.message is None or storable(f.message, MAX_MESSAGE_CHARS) is f.message)
    ):
        return f  # storable as it is (most files): nothing to clean
    reason, message = f.reason, f.message
    if reason is None and work_path != clean_text(f.work_path):
        reason = Reason.REFUSED_PATH
        message = (
            f"its path is {len(os.fsencode(f.work_path))} bytes long; the ledger indexes"
            f" paths of at most {MAX_KEY_BYTES} bytes: move it to a shorter path"
        )
    cleaned = dataclasses.replace(
        f,
        path=clean_text(f.path, MAX_PATH_CHARS),
        source_root=clean_text(f.source_root, MAX_PATH_CHARS),
        work_path=work_path,
        reason=reason,
        message=None if message is None else clean_text(message, MAX_MESSAGE_CHARS),
    )
    return f if cleaned == f else cleaned


def _ids_by_work_path(s: Session, paths: Sequence[str]) -> dict[str, int]:
    """The rows among these work paths (in the ledger's form): work path -> id."""
    ids: dict[str, int] = {}
    for i in range(0, len(paths), IN_CHUNK):
        chunk = paths[i : i + IN_CHUNK]
        query = select(File.work_path, File.id).where(File.work_path.in_(chunk))
        ids.update((row.work_path, row.id) for row in s.execute(query))
    return ids


# A recorded row, as `_rows_by_work_path` reads it.
_Earlier = Row[str, int, str, int, int | None, str | None, int | None, str | None, str | None]


def _rows_by_work_path(s: Session, paths: Sequence[str]) -> dict[str, _Earlier]:
    """The rows among these work paths (in the ledger's form), each with what its
    intake's follow-up needs: work path -> (id, state, size, batch_id, final_path,
    duplicate_of, reason, message)."""
    rows: dict[str, _Earlier] = {}
    for i in range(0, len(paths), IN_CHUNK):
        query = select(
            File.work_path,
            File.id,
            File.state,
            File.size,
            File.batch_id,
            File.final_path,
            File.duplicate_of,
            File.reason,
            File.message,
        ).where(File.work_path.in_(paths[i : i + IN_CHUNK]))
        rows.update((row.work_path, row) for row in s.execute(query))
    return rows


_REASONS: dict[str | None, Reason] = {r.value: r for r in Reason}


def _follow_up_left(row: _Earlier) -> bool:
    """Whether a row recorded earlier still waits for what follows its recording: a
    queued row for its batch, a row final at intake for its file's move (its final
    path unwritten)."""
    if row.state == FileState.QUEUED:
        return row.batch_id is None
    return row.state in (FileState.FAILED, FileState.DUPLICATE) and row.final_path is None


def _live_originals(s: Session, hashes: set[str]) -> dict[str, tuple[int, str | None, str | None]]:
    """For each hash, the earliest row with those bytes that is not failed or a duplicate."""
    out: dict[str, tuple[int, str | None, str | None]] = {}
    ordered = sorted(hashes)
    for i in range(0, len(ordered), IN_CHUNK):
        for r in s.execute(
            select(File.id, File.sha256, File.image_id, File.image_url)
            .where(File.sha256.in_(ordered[i : i + IN_CHUNK]))
            .where(File.state.notin_(NOT_ORIGINALS))
            .order_by(File.id)
        ):
            out.setdefault(r.sha256, (r.id, r.image_id, r.image_url))
    return out


def _decide_originals(
    s: Session, fresh: Sequence[NewFile]
) -> dict[str, tuple[int, str | None, str | None]]:
    """The live originals of these files' bytes, with the right to add to them
    (`lock_content`) held until the transaction ends."""
    hashes = {f.sha256 for f in fresh if f.sha256 and f.reason is None}
    lock_content(s, hashes)
    return _live_originals(s, hashes)


@dataclass(frozen=True, slots=True)
class _RowsInsert:
    """The new-row INSERT for many rows as one statement (`VALUES (...), (...), ...`),
    through the driver.

    One statement, not an executemany: SQLite runs the count triggers' program
    once per executed statement (an executemany of 500 rows cost about three times
    the multi-row statement), PostgreSQL fires its statement triggers once per
    statement. And not SQLAlchemy's executemany, which converts every value of
    every row through its per-row machinery: this is the same statement (compiled
    once per dialect, with the casts PostgreSQL needs) and the same column types'
    conversions (`bind_processor`: text cleaned, JSON serialised, booleans).
    On PostgreSQL the rows go as one array a column (`INSERT ... SELECT * FROM
    unnest(...)`: `reka_ingest.ledger.bulk`), not as a VALUES list, whose 11,000
    placeholders psycopg would parse in Python at each statement.
    """

    head: str  # INSERT INTO files (...) VALUES
    group: str  # one row's (?, ?, ...), placeholders positional
    keys: tuple[str, ...]  # the row's keys, in the group's order
    convert: tuple[Callable[[Any], Any] | None, ...]  # per key; None: passed as is
    # Per key, what its conversion makes of None (worked out once: rows hold many Nones).
    of_none: tuple[Any, ...]
    # PostgreSQL: the whole statement for any number of rows (arrays); else None.
    arrays: str | None

    @classmethod
    def compile(cls, dialect: Dialect) -> _RowsInsert:
        table = cast(Table, File.__table__)
        compiled = insert(table).compile(dialect=dialect, column_keys=list(_ROW_KEYS))
        assert isinstance(compiled, SQLCompiler)
        head, values, group = compiled.string.rpartition(" VALUES ")
        group = group.partition(" RETURNING ")[0]  # PostgreSQL's implicit one: ids are read after
        assert values and set(compiled.binds) == set(_ROW_KEYS), compiled.string
        if compiled.positiontup is not None:  # qmark: SQLite
            keys = tuple(compiled.positiontup)
        else:  # pyformat (psycopg): made positional, so that rows can repeat the group
            keys = tuple(_NAMED.findall(group))
            group = _NAMED.sub("%s", group)
        convert = tuple(table.c[k].type.dialect_impl(dialect).bind_processor(dialect) for k in keys)
        of_none = tuple(None if c is None else c(None) for c in convert)
        arrays = (
            f"{head} SELECT * FROM {unnest_arrays(dialect, keys)}{_RETURNING}"  # noqa: S608 - our names
            if dialect.name == "postgresql"
            else None
        )
        return cls(head + values, group, keys, convert, of_none, arrays)

    def run(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> dict[str, int]:
        """Insert `rows`; their new ids by work path (as stored: unique)."""
        triples = tuple(zip(self.keys, self.convert, self.of_none, strict=True))
        ids: dict[str, int] = {}
        for i in range(0, len(rows), IN_CHUNK):
            part = rows[i : i + IN_CHUNK]
            params = [
                none if (v := row[k]) is None else v if c is None else c(v)
                for row in part
                for k, c, none in triples
            ]
            if self.arrays is not None:
                sql = self.arrays
                params = array_params(conn.dialect, self.keys, params)
            else:
                sql = self.head + ", ".join([self.group] * len(part)) + _RETURNING
            result = conn.exec_driver_sql(sql, tuple(params))
            ids.update((path, file_id) for file_id, path in result)
        return ids


_NAMED = re.compile(r"%\((\w+)\)s")  # a pyformat placeholder
# The new rows' ids, paired with their work paths (SQLite returns them in no set order).
_RETURNING = " RETURNING id, work_path"
_ROW_INSERTS: dict[str, _RowsInsert] = {}  # by dialect name


def _insert(s: Session, rows: list[dict[str, Any]]) -> dict[str, int]:
    """One multi-row INSERT (through the driver, see `_RowsInsert`); the new ids by
    work path (unique), from its `RETURNING`: each id comes with its work path, so
    their order does not matter (SQLAlchemy's own `RETURNING` keeps parameter order,
    for which SQLite falls back to one statement per row)."""
    if not rows:
        return {}
    conn = s.connection()
    dialect = conn.dialect
    plan = _ROW_INSERTS.get(dialect.name)
    if plan is None:
        plan = _ROW_INSERTS[dialect.name] = _RowsInsert.compile(dialect)
    return plan.run(conn, rows)


def record_files(
    ledger: Ledger, given: Sequence[NewFile], *, now: float, allow_reupload: bool = False
) -> list[Recorded]:
    """Insert one row per file in one transaction; a work path already recorded gets
    no second row.

    A work path already recorded whose follow-up is not done (a queued row with
    no batch, a row final at intake whose file was not moved) comes back as it
    stands, `again=True`, for the caller to finish: this call may be a retry of
    one whose COMMIT happened although its answer was lost (a connection cut at
    COMMIT), after which only this call's caller can still batch or move those
    files. Any other known work path is skipped.

    In bulk: one query for known work paths, one for earlier live copies of the
    same bytes, one multi-row INSERT (and a second for copies of bytes first
    seen in this same group, which point at the first of them). The lookup of
    earlier copies and the inserts are one decision per hash: `lock_content`
    keeps another watcher on the same ledger from making its own at once.
    """
    if not given:
        return []
    # The stored work path -> the caller's (they differ for names that are not UTF-8).
    files = [for_ledger(f) for f in given]
    caller_path = {f.work_path: g.work_path for f, g in zip(files, given, strict=True)}
    with ledger.write() as s:
        earlier = _rows_by_work_path(s, [f.work_path for f in files])
        known = set(earlier)
        fresh: list[NewFile] = []
        again: list[Recorded] = []
        for f in files:
            if f.work_path not in known:
                known.add(f.work_path)
                fresh.append(f)
            elif (old := earlier.pop(f.work_path, None)) is not None and _follow_up_left(old):
                again.append(
                    Recorded(
                        file_id=old.id,
                        state=FileState(old.state),
                        size=old.size,
                        work_path=caller_path[f.work_path],
                        duplicate_of=old.duplicate_of,
                        reason=_REASONS.get(old.reason),
                        message=old.message,
                        again=True,
                    )
                )
        originals = {} if allow_reupload else _decide_originals(s, fresh)
        first: list[tuple[NewFile, dict[str, Any]]] = []
        later: list[tuple[NewFile, dict[str, Any]]] = []
        firsts_here: set[str] = set()
        for f in fresh:
            row = _row(f, now)
            if f.reason is None and f.sha256 and not allow_reupload:
                if f.sha256 in originals:
                    _mark_duplicate(row, originals[f.sha256], now)
                elif f.sha256 in firsts_here:
                    later.append((f, row))
                    continue
                else:
                    firsts_here.add(f.sha256)
            first.append((f, row))
        ids = _insert(s, [r for _, r in first])
        for f, row in first:
            if f.sha256 in firsts_here and row["state"] == FileState.QUEUED:
                originals.setdefault(f.sha256, (ids[f.work_path], None, None))
        for f, row in later:
            _mark_duplicate(row, originals[f.sha256 or ""], now)
        ids.update(_insert(s, [r for _, r in later]))
        _supersede(s, [(f.source_root, f.path, ids[f.work_path]) for f in fresh], now)
        rows = {f.work_path: row for f, row in first + later}
        return [
            Recorded(
                file_id=ids[f.work_path],
                state=FileState(rows[f.work_path]["state"]),
                size=f.size,
                work_path=caller_path[f.work_path],
                duplicate_of=rows[f.work_path]["duplicate_of"],
                reason=rows[f.work_path]["reason"],
                message=rows[f.work_path]["message"],
            )
            for f in fresh
        ] + again


# A byte shown as %XX (reka_ingest.core.text.shown), or those three characters.
_ESCAPED = re.compile(r"%[0-9A-F]{2}")


def _supersede(s: Session, new: Sequence[tuple[str, str, int]], now: float) -> None:
    """Earlier settled failed rows of the same (source root, path) as a new row become
    `superseded` by it (the newest new row of that path, when a group holds several)."""
    latest: dict[tuple[str, str], int] = {}
    for root, path, file_id in new:
        if _ESCAPED.search(path) is None:  # see the module's docstring
            latest[(root, path)] = max(file_id, latest.get((root, path), 0))
    paths = sorted({path for _, path in latest})
    changes: list[tuple[int, int]] = []  # (failed row, the new row superseding it)
    query = _failed_by_path(s.get_bind().dialect.name)
    settled = "%" + _like_escaped(ERROR_SUFFIX)
    for i in range(0, len(paths), IN_CHUNK):
        for r in s.execute(query, {"paths": paths[i : i + IN_CHUNK], "settled": settled}):
            by = latest.get((r.source_root, r.path))
            if by is not None and r.id < by:
                changes.append((r.id, by))
    if changes:
        update_by_id(
            s,
            ("superseded_by",),
            changes,
            {"state": FileState.SUPERSEDED, "updated_at": now},
            only_in=FileState.FAILED,
        )


def _failed_by_path(dialect: str) -> TextClause:
    """Settled failed rows of some paths, through `ix_files_failed_path`: its partial
    condition in its own words, and on SQLite named (without statistics its planner
    would take the state index and read every failed row)."""
    hint = " INDEXED BY ix_files_failed_path" if dialect == "sqlite" else ""
    return text(
        f"SELECT id, source_root, path FROM files{hint} WHERE {FAILED_ONLY}"  # noqa: S608 - fixed words; values bound
        " AND path IN :paths AND final_path LIKE :settled ESCAPE '/'"
    ).bindparams(
        bindparam("paths", expanding=True, type_=File.__table__.c.path.type),
        bindparam("settled", type_=File.__table__.c.final_path.type),
    )


def _like_escaped(literal: str) -> str:
    """`literal` matched as itself in a LIKE pattern escaped by '/'."""
    return literal.replace("/", "//").replace("%", "/%").replace("_", "/_")


def _mark_duplicate(
    row: dict[str, Any], original: tuple[int, str | None, str | None], now: float
) -> None:
    row.update(
        state=FileState.DUPLICATE,
        reason=Reason.DUPLICATE_CONTENT,
        duplicate_of=original[0],
        image_id=original[1],
        image_url=original[2],
        message=f"same {_what(row)} as file {original[0]}",
        finished_at=now,
    )


def _what(row: dict[str, Any]) -> str:
    """What a row's `sha256` is the identity of: its bytes, or (a URL row) its normal URL."""
    return "URL" if row["origin"] == Origin.URL else "bytes"


def create_batch(ledger: Ledger, file_ids: Sequence[int], *, now: float) -> int:
    """Group queued, unbatched files into a new batch in state `queued`; returns its id."""
    return create_batches(ledger, [file_ids], now=now)[0]


def pack(rows: Iterable[tuple[int, int]], *, max_files: int, max_bytes: int) -> list[list[int]]:
    """File ids (with their sizes) in groups of at most `max_files` files and
    `max_bytes` bytes, in the order given (a file larger than `max_bytes` alone):
    batches for rows that no batcher holds."""
    groups: list[list[int]] = []
    nbytes = 0
    for file_id, size in rows:
        if not groups or len(groups[-1]) >= max_files or nbytes + size > max_bytes:
            groups.append([])
            nbytes = 0
        groups[-1].append(file_id)
        nbytes += size
    return groups


def create_batches(ledger: Ledger, groups: Sequence[Sequence[int]], *, now: float) -> list[int]:
    """New `queued` batches, one per group of queued, unbatched files, in one
    transaction; returns their ids in order.

    A burst closes a batch every few milliseconds: one transaction for all of
    them keeps the commits, and the write lock the workers wait for, to one per
    call instead of one per batch.

    A file goes into one batch at most: only rows still unbatched are taken. A
    group none of whose rows is left unbatched, but some of them in a batch,
    gets no new batch: its id is that batch's (the first, should they be in
    several). So a call made again after one whose commit happened although it
    failed (the connection lost at COMMIT) creates nothing twice, and gives back
    the batches the first made, to be sent.
    """
    if not groups:
        return []
    with ledger.write() as s:
        batches = [
            Batch(state=BatchState.QUEUED, created_at=now, queued_at=now, attempts=0)
            for _ in groups
        ]
        s.add_all(batches)
        s.flush()
        files = cast(Table, File.__table__)
        # One UPDATE per batch (its ids in one IN list), not one per file: the count
        # triggers run once per statement on SQLite (see `_RowsInsert`).
        for batch, ids in zip(batches, groups, strict=True):
            for i in range(0, len(ids), IN_CHUNK):
                s.execute(
                    update(files)
                    .where(
                        files.c.id.in_(ids[i : i + IN_CHUNK]),
                        files.c.state == FileState.QUEUED,
                        files.c.batch_id.is_(None),
                    )
                    .values(batch_id=batch.id, queued_at=now, updated_at=now)
                )
        ids = [b.id for b in batches]
        totals = {
            r.batch_id: (r.n, r.total or 0)
            for r in s.execute(
                select(
                    File.batch_id,
                    func.count().label("n"),
                    func.sum(File.size).label("total"),
                )
                .where(File.batch_id.in_(ids))
                .group_by(File.batch_id)
            )
        }
        for batch in batches:
            batch.file_count, batch.total_bytes = totals.get(batch.id, (0, 0))
        for i, (batch, group) in enumerate(zip(batches, groups, strict=True)):
            if batch.id not in totals and (held := _batch_holding(s, group)) is not None:
                s.delete(batch)
                ids[i] = held
        return ids


def _batch_holding(s: Session, file_ids: Sequence[int]) -> int | None:
    """The first batch any of these files is in (None: none is in a batch)."""
    held: int | None = None
    for i in range(0, len(file_ids), IN_CHUNK):
        first = s.execute(
            select(func.min(File.batch_id)).where(File.id.in_(file_ids[i : i + IN_CHUNK]))
        ).scalar()
        if first is not None and (held is None or first < held):
            held = first
    return held


def unbatched_files(
    ledger: Ledger, *, limit: int = 10_000, urls: bool = False
) -> list[tuple[int, int]]:
    """Queued rows that never made it into a batch (the watcher stopped in between):
    file rows, or with `urls` the URL rows (batched apart: a request is one kind)."""
    kind = File.origin == Origin.URL if urls else File.origin != Origin.URL
    with ledger.read() as s:
        rows = s.execute(
            select(File.id, File.size)
            .where(File.state == FileState.QUEUED, File.batch_id.is_(None), kind)
            .order_by(File.id)
            .limit(limit)
        ).all()
        return [(r.id, r.size) for r in rows]


def ids_of_work_paths(ledger: Ledger, paths: Sequence[str]) -> dict[str, int]:
    """The rows of these work paths (in the ledger's form): work path -> id."""
    with ledger.read() as s:
        return _ids_by_work_path(s, [keyable(p) for p in paths])


def known_work_paths(ledger: Ledger, paths: Sequence[str]) -> set[str]:
    """Which of these paths already have a row (for recovery after a crash and the
    backfill); paths as the filesystem gives them, compared in the ledger's form."""
    stored: dict[str, list[str]] = {}
    for path in paths:
        stored.setdefault(keyable(path), []).append(path)
    with ledger.read() as s:
        known = _ids_by_work_path(s, list(stored))
    return {path for form in known for path in stored[form]}


@dataclass(frozen=True, slots=True)
class TakenImage:
    """A recorded image that would have owned a given sidecar (for `late_sidecar`)."""

    file_id: int
    path: str
    state: str
    image_id: str | None
    taken_at: float


def images_owning(ledger: Ledger, *, source_root: str, sidecar_rel: str) -> list[TakenImage]:
    """Rows of images dropped under `source_root` that `sidecar_rel` belongs to by the
    pairing rule (`photo.jpg` for `photo.jpg.json`, any `photo.*` for `photo.json`),
    newest first. Both paths are in the ledger's shown form."""
    stem = sidecar_rel.removesuffix(SIDECAR_SUFFIX)
    like = stem.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + ".%"
    with ledger.read() as s:
        rows = s.execute(
            select(File.id, File.path, File.state, File.image_id, File.seen_at, File.queued_at)
            .where(File.source_root == source_root)
            .where((File.path == stem) | File.path.like(like, escape="\\"))
            .order_by(File.id.desc())
            .limit(IN_CHUNK)
        ).all()
    return [
        TakenImage(
            file_id=r.id,
            path=r.path,
            state=r.state,
            image_id=r.image_id,
            taken_at=r.queued_at or r.seen_at,
        )
        for r in rows
        if (r.path == stem or os.path.splitext(r.path)[0] == stem)
        and not r.path.lower().endswith(SIDECAR_SUFFIX)
    ]

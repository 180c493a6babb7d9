"""`files --csv` and `files --json` on a SQLite ledger in two processes, one per
core: the command's own and a helper started for the export, each reading and
formatting its share of the rows while the other does the same, the output the
bytes one process writes (reka_ingest.cli.export), in the same order.

The rows are cut by id into chunks of WIDTH ids: chunk k holds the rows with
`lo + k*WIDTH < id <= lo + (k+1)*WIDTH`, where `lo` is one below the smallest id
when the export starts; after the last such chunk, the tail (ids above it, rows
added meanwhile) is read a chunk of rows at a time. The command's process takes
the even chunks, the helper the odd ones. Each reads and formats its next chunk
at once, then waits for the token, writes the chunk to stdout (the same file:
the helper inherits it) and passes the token on through a pipe. The token says
how many rows the export may still write (`--limit`) and whether any was written
(JSON's separators); the process that writes the last row (or the tail) writes
the end (JSON's `]`) and passes `end`. So the output is in id order, each
process holds one chunk at most, and nothing goes to a temporary file.

A helper that fails (or is killed) closes its end of the pipe: the command sees
it at its next token, or at the helper's exit status when it is done, and stops
with an error that says the output is incomplete; a command that fails ends its
helper. A closed stdout (`| head`) in either process ends the export as one
process would: a BrokenPipeError in the command.

The helper is a fresh interpreter (`-I -S`) that imports this module, the
formatting module, orjson (found where the command's own was: its folder is
the one path added) and the standard library only (no SQLAlchemy, no settings): a
few MB beside the command's own memory, not a copy of it.
"""

from __future__ import annotations

import errno
import gc
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final, Literal

import orjson

from reka_ingest.cli.export import (
    columns_of,
    csv_header,
    csv_lines,
    json_objects,
    keep_freed_memory,
    no_cycle_collection,
)
from reka_ingest.core.errors import IngestError

Format = Literal["csv", "json"]

# Ids per chunk: one chunk's rows (and their text) are a few MB in each process.
WIDTH: Final = 2_500
# The helper's exit status when stdout was closed under it (`| head`).
STDOUT_CLOSED: Final = 32
_END: Final = b"end\n"


@dataclass(frozen=True)
class Plan:
    """What both processes know of one export (the helper gets it as JSON)."""

    database: str  # the SQLite file
    busy_timeout: float  # seconds (the ledger's own)
    range_sql: tuple[str, Sequence[str], dict[str, Any]]  # sql, parameter names, fixed values
    tail_sql: tuple[str, Sequence[str], dict[str, Any]]
    state: str | None
    fmt: Format
    lo: int  # chunk k: lo + k*WIDTH < id <= lo + (k+1)*WIDTH, for k < tail
    tail: int  # the tail's index: ids above lo + tail*WIDTH
    limit: int | None
    encoding: str
    errors: str
    width: int = WIDTH


class OtherGone(Exception):
    """The other process closed its end of the token pipe without `end`."""


def _params(sql: tuple[str, Sequence[str], dict[str, Any]], **values: Any) -> list[Any]:
    return [values[n] if n in values else sql[2][n] for n in sql[1]]


class _Share:
    """One process's part: its chunks, read, formatted and written in turn."""

    def __init__(
        self, plan: Plan, role: int, conn: sqlite3.Connection, tokens_in: BinaryIO, out_fd: int
    ) -> None:
        self.plan = plan
        self.role = role
        self.conn = conn
        self.tokens_in = tokens_in
        self.out_fd = out_fd
        self.remaining = plan.limit
        self.any_rows = False

    def _rows(self, sql: tuple[str, Sequence[str], dict[str, Any]], **values: Any) -> list[Any]:
        return self.conn.execute(sql[0], _params(sql, state=self.plan.state, **values)).fetchall()

    def _text(self, rows: list[Any]) -> str:
        if not rows:
            return ""
        cols = columns_of(rows)
        return csv_lines(cols) if self.plan.fmt == "csv" else json_objects(cols)

    def _write(self, text: str) -> None:
        data = memoryview(text.encode(self.plan.encoding, self.plan.errors))
        while data:
            data = data[os.write(self.out_fd, data) :]

    def _write_rows(self, rows: list[Any], text: str) -> bool:
        """Write `rows` (whose text is `text`) as far as the limit allows: whether the
        limit is reached."""
        done = False
        if self.remaining is not None and len(rows) >= self.remaining:
            rows, done = rows[: self.remaining], True
            text = self._text(rows)
        if rows:
            if self.plan.fmt == "json":
                self._write(",\n" if self.any_rows else "\n")
            self._write(text)
            self.any_rows = True
            if self.remaining is not None:
                self.remaining -= len(rows)
        return done

    def _tail(self) -> None:
        after = self.plan.lo + self.plan.tail * self.plan.width
        while self.remaining is None or self.remaining > 0:
            size = (
                self.plan.width if self.remaining is None else min(self.plan.width, self.remaining)
            )
            rows = self._rows(self.plan.tail_sql, after=after, size=size)
            self._write_rows(rows, self._text(rows))
            if len(rows) < size:
                return
            after = rows[-1][0]

    def _finish(self) -> None:
        if self.plan.fmt == "json":
            self._write("\n]\n")

    def _take_token(self) -> bool:
        """Wait for the token: False when the export has ended."""
        message = self.tokens_in.readline()
        if message == _END:
            return False
        if not message.endswith(b"\n"):
            raise OtherGone
        remaining, any_rows = message.split()[1:]
        self.remaining = None if remaining == b"-" else int(remaining)
        self.any_rows = any_rows == b"1"
        return True

    def run(self, tokens_out: BinaryIO) -> None:
        plan = self.plan
        rows: list[Any] = []
        text = ""
        for k in range(self.role, plan.tail + 1, 2):
            if k < plan.tail:
                first = plan.lo + k * plan.width
                rows = self._rows(plan.range_sql, lo=first, hi=first + plan.width)
                text = self._text(rows)
            if k == 0:
                self._write(csv_header() if plan.fmt == "csv" else "[")
            elif not self._take_token():
                return
            if k == plan.tail:
                self._tail()
                ended = True
            else:
                ended = self._write_rows(rows, text)
                rows, text = [], ""  # gone before the next chunk is read: one chunk held
            if ended:
                self._finish()
                _send(tokens_out, _END)
                return
            remaining = "-" if self.remaining is None else str(self.remaining)
            _send(tokens_out, f"go {remaining} {int(self.any_rows)}\n".encode())


def _send(tokens_out: BinaryIO, message: bytes) -> None:
    try:
        tokens_out.write(message)
        tokens_out.flush()
    except BrokenPipeError:  # the other has ended: it reads no more tokens
        pass


def _connect(plan: Plan) -> sqlite3.Connection:
    conn = sqlite3.connect(plan.database, timeout=plan.busy_timeout, isolation_level=None)
    conn.execute("PRAGMA query_only=ON")
    return conn


def export(plan: Plan) -> None:
    """The command's part: start the helper, take the even chunks, wait for the
    helper; an error (IngestError's text is the caller's) when it failed."""
    from_helper, to_me = os.pipe()
    from_me, to_helper = os.pipe()
    root = str(Path(__file__).resolve().parents[2])
    packages = str(Path(orjson.__file__).resolve().parent.parent)
    code = (
        f"import sys; sys.path.insert(0, {root!r}); sys.path.append({packages!r}); "
        "from reka_ingest.cli.export_pair import main; main()"
    )
    args = json.dumps({"plan": asdict(plan), "tokens_in": from_me, "tokens_out": to_me})
    helper = subprocess.Popen(  # noqa: S603 - this interpreter, our own code and plan
        [sys.executable, "-I", "-S", "-c", code, args],
        pass_fds=(from_me, to_me),
        stdin=subprocess.DEVNULL,
    )
    os.close(from_me)
    os.close(to_me)
    ok = gone = False
    try:
        with (
            open(from_helper, "rb") as tokens_in,
            open(to_helper, "wb", buffering=0) as tokens_out,
        ):
            conn = _connect(plan)
            try:
                with no_cycle_collection():
                    _Share(plan, 0, conn, tokens_in, sys.stdout.fileno()).run(tokens_out)
            except OtherGone:
                gone = True  # its exit status says why
            finally:
                conn.close()
        ok = True
    finally:
        if not ok and helper.poll() is None:
            helper.kill()
        status = helper.wait()
    if status == STDOUT_CLOSED:
        raise BrokenPipeError(errno.EPIPE, "stdout closed")
    if status != 0 or gone:
        raise HelperFailed(helper.pid, status)


class HelperFailed(IngestError):
    """The helper stopped before its part was written: the export is incomplete."""

    def __init__(self, pid: int, status: int) -> None:
        super().__init__(
            f"files: the export's helper process (pid {pid}) exited with status {status} "
            "before its part was written; the output is incomplete"
        )


def main() -> None:
    """The helper's part (its own interpreter): the odd chunks."""
    gc.disable()  # millions of tuples, no cycles (reka_ingest.cli.export)
    keep_freed_memory()
    args = json.loads(sys.argv[1])
    raw = args["plan"]
    plan = Plan(**{**raw, "range_sql": tuple(raw["range_sql"]), "tail_sql": tuple(raw["tail_sql"])})
    try:
        with (
            open(args["tokens_in"], "rb") as tokens_in,
            open(args["tokens_out"], "wb", buffering=0) as tokens_out,
        ):
            conn = _connect(plan)
            try:
                _Share(plan, 1, conn, tokens_in, sys.stdout.fileno()).run(tokens_out)
            finally:
                conn.close()
    except BrokenPipeError:
        os._exit(STDOUT_CLOSED)
    except KeyboardInterrupt:  # Ctrl-C reaches both processes: the command says it
        sys.exit(130)
    except OtherGone:
        sys.stderr.write("reka-ingest files (export helper): the command's process is gone\n")
        sys.exit(1)
    except Exception as err:  # noqa: BLE001 - any failure: said, and a non-zero exit
        sys.stderr.write(f"reka-ingest files (export helper): {type(err).__name__}: {err}\n")
        sys.exit(1)

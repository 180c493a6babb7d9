"""The CPU floor of the design: what any pipeline keeping DESIGN.md's rules must
spend on each image beyond the raw client's upload, in plain Python.

`cpu_ratio`'s target is the pipeline's CPU over the raw client's. This loop does,
for the same files, only the work the design's principles fix for every image,
each step once and as cheaply as Python does it, and measures each step's CPU:

- `claim`: one rename from the inbox into a work folder (principle 8);
- `intake hash`: one read of the whole file and its sha256, the identity a
  duplicate is decided by before anything is sent (principle 10);
- `ledger rows`: its row in the ledger's own schema (made by the ledger's
  migrations: indexes, count triggers), many rows a statement;
- `validate`: Pillow's header parse, the check that a file is an image of a
  format the API takes before its batch is sent (the path of a file: "validate");
- `sent hash`: the sha256 of the bytes sent ("the hash recorded is the hash of
  the bytes sent", principle 10), over bytes already in memory: not even a read;
- `outcomes`: its image id recorded, then its final state and place, one UPDATE
  a row, a transaction per batch;
- `move`: one rename into done/.

No Redis, no Celery, no events, no sidecar lookup, no logging, no batches table,
no stability rule, no polling: a floor, not a model. `cpu_floor_ratio` is the raw
client's CPU plus this loop's, over the raw client's, in the same run: the least
`cpu_ratio` the design allows, whatever its code.

Run as its own process (its CPU is its own):

    python -m bench.cpu_floor FILE_LIST ROOT BATCH OUT_JSON
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from PIL import Image

ROWS_PER_INSERT: Final = 500  # the watcher's group size
LEDGER_INSERT: Final = (
    "INSERT INTO files (path, work_path, size, mtime, sha256, seen_at, source_root, origin,"
    " index_flag, state, attempts, possible_duplicate, polls, updated_at) VALUES "
)
LEDGER_ROW: Final = "(?, ?, ?, ?, ?, ?, ?, 'event', 1, 'queued', 0, 0, 0, ?)"
UPLOADED: Final = "UPDATE files SET state = 'indexing', image_id = ?, updated_at = ? WHERE id = ?"
INDEXED: Final = (
    "UPDATE files SET state = 'indexed', indexing_status = 2, final_path = ?, updated_at = ?"
    " WHERE id = ?"
)


def _connect(db: Path) -> sqlite3.Connection:
    """The ledger's schema and connection settings (made before the clock starts)."""
    from reka_ingest.ledger import open_ledger  # noqa: PLC0415 - only here, not in the loop
    from reka_ingest.ledger.db import SQLITE_PRAGMAS  # noqa: PLC0415

    open_ledger(f"sqlite:///{db}").dispose()
    conn = sqlite3.connect(db, isolation_level=None)
    for pragma in SQLITE_PRAGMAS:
        conn.execute(f"PRAGMA {pragma}")
    return conn


def _in_transaction(conn: sqlite3.Connection, sql: str, rows: list[tuple[Any, ...]]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(sql, rows)
    conn.execute("COMMIT")


def run(files: list[Path], root: Path, batch: int) -> dict[str, Any]:
    """Each step over every file, one step after the other; CPU seconds per step."""
    inbox, work, done = root / "inbox", root / "work", root / "done"
    for folder in (inbox, work, done):
        folder.mkdir(parents=True, exist_ok=True)
    dropped = []
    for p in files:  # the drop: a hardlink, as the pipeline's runs drop (not measured)
        target = inbox / p.name
        os.link(p, target)
        dropped.append(target)
    conn = _connect(root / "ledger.sqlite3")
    cpu: dict[str, float] = {}

    def step(name: str, fn: Callable[[], Any]) -> Any:
        started = time.process_time()
        out = fn()
        cpu[name] = time.process_time() - started
        return out

    def claim() -> list[Path]:
        claimed = []
        for p in dropped:
            target = work / p.name
            os.rename(p, target)
            claimed.append(target)
        return claimed

    claimed: list[Path] = step("claim", claim)

    def intake_hash() -> list[tuple[Any, ...]]:
        now, rows = time.time(), []
        for p in claimed:
            fd = os.open(p, os.O_RDONLY)
            try:
                st = os.fstat(fd)
                data = os.pread(fd, st.st_size, 0)
            finally:
                os.close(fd)
            digest = hashlib.sha256(data).hexdigest()
            rows.append((p.name, str(p), st.st_size, st.st_mtime, digest, now, str(inbox), now))
        return rows

    rows: list[tuple[Any, ...]] = step("intake hash", intake_hash)

    def ledger_rows() -> None:
        for i in range(0, len(rows), ROWS_PER_INSERT):
            chunk = rows[i : i + ROWS_PER_INSERT]
            conn.execute("BEGIN IMMEDIATE")
            values = ", ".join([LEDGER_ROW] * len(chunk))
            conn.execute(LEDGER_INSERT + values, [v for r in chunk for v in r])
            conn.execute("COMMIT")

    step("ledger rows", ledger_rows)
    ids = [i for (i,) in conn.execute("SELECT id FROM files ORDER BY id")]

    def validate() -> None:
        for p in claimed:
            with Image.open(p) as im:
                if im.format != "JPEG":
                    raise RuntimeError(f"{p}: not a JPEG")

    step("validate", validate)
    contents = [p.read_bytes() for p in claimed]  # what the upload read (not measured)
    step("sent hash", lambda: [hashlib.sha256(data).hexdigest() for data in contents])
    contents.clear()

    def outcomes() -> None:
        now = time.time()
        for i in range(0, len(ids), batch):
            chunk = ids[i : i + batch]
            _in_transaction(conn, UPLOADED, [(f"image-{x}", now, x) for x in chunk])
        for i in range(0, len(ids), batch):
            chunk, paths = ids[i : i + batch], claimed[i : i + batch]
            done_rows = [(str(done / p.name), now, x) for x, p in zip(chunk, paths, strict=True)]
            _in_transaction(conn, INDEXED, done_rows)

    step("outcomes", outcomes)

    def move() -> None:
        for p in claimed:
            os.rename(p, done / p.name)

    step("move", move)
    conn.close()
    total = sum(cpu.values())
    n = len(files)
    return {
        "images": n,
        "cpu_s": round(total, 3),
        "cpu_s_per_1000_images": round(1000 * total / n, 4),
        "by_step_per_1000_images": {k: round(1000 * v / n, 4) for k, v in cpu.items()},
    }


def run_cpu_floor(files: list[Path], *, batch: int, work: Path, timeout: float) -> dict[str, Any]:
    """The loop over `files` in its own process, under `work` (removed after)."""
    root = work / "cpu-floor"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    listing, out = root / "files.txt", root / "result.json"
    listing.write_text("\n".join(str(p) for p in files))
    argv = [sys.executable, "-m", "bench.cpu_floor", str(listing), str(root / "run")]
    argv += [str(batch), str(out)]
    try:
        subprocess.run(argv, stdin=subprocess.DEVNULL, check=True, timeout=timeout)
        result: dict[str, Any] = json.loads(out.read_text())
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return result


def floor_ratio(floor: dict[str, Any], limit_cpu_per_1000: float) -> float:
    """The least `cpu_ratio` the design allows: (raw client + floor) over the raw client."""
    own = float(floor["cpu_s_per_1000_images"])
    return round((limit_cpu_per_1000 + own) / limit_cpu_per_1000, 2)


def main(argv: list[str]) -> int:
    list_file, root, batch, out = argv
    files = [Path(line) for line in Path(list_file).read_text().splitlines() if line]
    Path(out).write_text(json.dumps(run(files, Path(root), int(batch))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

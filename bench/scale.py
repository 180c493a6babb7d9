"""Flat at a million (`scale`): the commands and sweeps on a ledger of N rows
(BENCH_SCALE_N, default 1,000,000; 0 skips) against the same on one of 10,000.

The ledgers are filled in SQL (a recursive CTE on SQLite, generate_series on
PostgreSQL), in the states of a long-running deployment: the same live work in
both (the newest 500 files queued in 10 batches, 5 of them lost and 5 deferred
and due; the 3,000 before them indexing, every one due for a poll), and behind it
a history of N - 3,500 finished files: 2% failed, 5% duplicates of an indexed
original, the rest indexed, in done batches of 50 (the counts tables, migrations
0005 and 0009, kept by their triggers through the fill).
SQLite by default; BENCH_SCALE_DATABASES=sqlite,postgresql adds the
embedded PostgreSQL server of bench/service.py.

Measured, at both sizes:
- `reka-ingest files --csv` and `--json`, `status`, `status --json` and
  `metrics --once`: each the real command in its own process (sampled by
  bench/procs.py: wall seconds, peak RSS); the exports' rows per second;
- the query time of `status` (summary), of a metrics scrape (the collector's
  ledger part), of one poll sweep (claim of 500 due rows and their outcomes
  recorded) and of one reconcile sweep (the batches to send again and why):
  each run in this process, the median of several runs;
- the intake cost per file (the recorder's path: `record_files` in groups of
  500 and the batches they fill) on the big ledger and on an empty one (CPU
  time on SQLite, wall time on PostgreSQL);
- `reka-ingest scan` of a tree of 50,000 and of 200,000 tiny files
  (BENCH_SCALE_SCAN_N, 0 skips) on an empty ledger: files/s and peak RSS.
"""

# The fill's SQL is built from this module's own constants: no input reaches it.
# ruff: noqa: S608

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import redis
from sqlalchemy import text

from bench.plan import make_tree
from bench.procs import Sampler
from bench.service import Postgres
from bench.workload import CACHE
from reka_ingest.core.bundled_redis import BundledRedis, free_port
from reka_ingest.core.constants import POLL_BATCH_LIMIT, POLL_LEASE_SECONDS
from reka_ingest.core.logs import configure_logging
from reka_ingest.core.settings import IngestSettings
from reka_ingest.core.states import FileState, Origin
from reka_ingest.ledger import Ledger, open_ledger
from reka_ingest.ledger.intake import NewFile
from reka_ingest.ledger.polling import PollOutcome, claim_due_polls, record_polls
from reka_ingest.ledger.queries import summary
from reka_ingest.ledger.reconcile import batches_to_send
from reka_ingest.metrics.collector import IngestCollector
from reka_ingest.metrics.counters import resent_by_why
from scheduler.batcher import Batcher, BatchLimits, ledger_batch_groups, ledger_batches
from scheduler.recorder import Recorder

RESULTS: Final = Path(__file__).resolve().parent / "results"  # bench.report's (it imports us)
SMALL: Final = 10_000
INDEXING: Final = 3_000  # the newest files, all due for a poll
QUEUED: Final = 500  # the very newest, in 10 batches
PER_BATCH: Final = 50
QUERY_RUNS: Final = 5  # after one warm-up; the median is reported
INTAKE_FILES: Final = 5_000
INTAKE_RUNS: Final = 5
REQUEUE_AFTER: Final = 300.0
SWEEP_LIMIT: Final = 1000
DATABASES: Final = ("sqlite", "postgresql")

# One row per file i (1..n), j = n - i its age rank (0: the newest). The kinds:
# j < QUEUED queued (in 10 batches after the done ones), j < QUEUED + INDEXING
# indexing (due), older: i % 100 in (0, 1) failed, in 5..9 a duplicate of file
# i - 10 (indexed), the rest indexed. Every 50th path needs CSV quoting.
# PAD(x), HEX(x), SHA(x), JSON(x): written per database by `_fill_sql`.
_KIND = """
CASE WHEN :n - i < :queued THEN 'queued'
     WHEN :n - i < :queued + :indexing THEN 'indexing'
     WHEN i % 100 IN (0, 1) THEN 'failed'
     WHEN i % 100 IN (5, 6, 7, 8, 9) AND i > 10 THEN 'duplicate'
     ELSE 'indexed' END
"""

_COLUMNS = """
    id, path, source_root, work_path, final_path, origin, size, mtime, sha256, sidecar,
    index_flag, content_type, state, reason, message, attempts, batch_id, duplicate_of,
    possible_duplicate, image_id, image_url, indexing_status, upload_timestamp,
    upload_request_id, poll_request_id, next_poll_at, poll_delay, polls,
    seen_at, queued_at, uploaded_at, indexed_at, finished_at, updated_at
"""

_VALUES = """
    i,
    'photos/2026/' || (i % 12 + 1) || '/camera-' || (i % 7) || '/IMG_' || PAD(i)
        || CASE WHEN i % 50 = 0 THEN ', "best".jpg' ELSE '.jpg' END,
    '/srv/reka-ingest/inbox',
    '/srv/reka-ingest/var/work/claim-' || (i / 1000) || '/IMG_' || PAD(i) || '.jpg',
    CASE WHEN kind IN ('queued', 'indexing') THEN NULL
         WHEN kind = 'failed' THEN '/srv/reka-ingest/var/failed/IMG_' || i || '.jpg.error.json'
         ELSE '/srv/reka-ingest/var/done/photos/IMG_' || PAD(i) || '.jpg' END,
    CASE i % 4 WHEN 0 THEN 'event' WHEN 1 THEN 'scan' WHEN 2 THEN 'backfill'
         ELSE 'recovery' END,
    100000 + (i * 7919) % 5000000,
    :now - 900000 + i * 0.5,
    SHA(CASE WHEN kind = 'duplicate' THEN i - 10 ELSE i END),
    CASE WHEN i % 10 = 0 THEN JSON('{"camera": "x100", "tags": ["a", "b"]}') END,
    TRUE,
    'image/jpeg',
    kind,
    CASE WHEN kind = 'failed' THEN
            CASE i % 4 WHEN 0 THEN 'indexing_failed' WHEN 1 THEN 'not_an_image'
                 WHEN 2 THEN 'indexing_timeout' ELSE 'empty_file' END
         WHEN kind = 'duplicate' THEN 'duplicate_content' END,
    CASE WHEN kind = 'failed' THEN 'the server said no: ' || HEX(i)
         WHEN kind = 'duplicate' THEN 'same bytes as file ' || (i - 10) END,
    1,
    CASE WHEN kind = 'queued' THEN :done_batches + 1 + (:n - i) / :per_batch
         ELSE (i - 1) / :per_batch + 1 END,
    CASE WHEN kind = 'duplicate' THEN i - 10 END,
    FALSE,
    CASE WHEN kind = 'duplicate' THEN 'img-' || HEX(i - 10)
         WHEN kind <> 'queued' THEN 'img-' || HEX(i) END,
    CASE WHEN kind = 'duplicate' THEN 'https://images.reka.test/' || HEX(i - 10)
         WHEN kind <> 'queued' THEN 'https://images.reka.test/' || HEX(i) END,
    CASE WHEN kind IN ('indexed', 'duplicate') THEN 2 WHEN kind = 'indexing' THEN 1 END,
    CASE WHEN kind <> 'queued' THEN :now - 800000 + i * 0.5 END,
    CASE WHEN kind <> 'queued' THEN 'req-' || HEX(i / :per_batch) END,
    CASE WHEN kind IN ('indexed', 'indexing') THEN 'poll-' || HEX(i) END,
    CASE WHEN kind = 'indexing' THEN :now - 60 + (i % 50) END,
    CASE WHEN kind = 'indexing' THEN 4.0 END,
    CASE WHEN kind IN ('indexed', 'indexing') THEN 3 ELSE 0 END,
    :now - 900000 + i * 0.5,
    :now - 890000 + i * 0.5,
    CASE WHEN kind <> 'queued' THEN :now - 800000 + i * 0.5 END,
    CASE WHEN kind = 'indexed' THEN :now - 799990 + i * 0.5 + (i % 300) END,
    CASE WHEN kind IN ('indexed', 'failed', 'duplicate') THEN :now - 799990 + i * 0.5 END,
    :now - 799990 + i * 0.5
"""

# Batches 1..done_batches: done; then 10 holding the queued files: 5 queued an hour
# ago and never taken (a lost message), 5 deferred whose wait is over.
_BATCHES = """
    b,
    CASE WHEN b <= :done_batches THEN 'done'
         WHEN b <= :done_batches + 5 THEN 'queued' ELSE 'deferred' END,
    :per_batch, :per_batch * 2500000, 1,
    :now - 900000 + b * 25, :now - 900000 + b * 25, :now - 899990 + b * 25,
    CASE WHEN b <= :done_batches THEN :now - 899980 + b * 25 END,
    NULL,
    CASE WHEN b > :done_batches + 5 THEN :now - 10 END,
    'req-' || b, NULL
"""
_BATCH_COLUMNS = """
    id, state, file_count, total_bytes, attempts, created_at, queued_at, started_at,
    finished_at, lease_until, next_attempt_at, request_id, last_error
"""

_SQLITE_FUNCTIONS = {
    "PAD": "printf('%07d', {})",
    "HEX": "printf('%016x', {})",
    "SHA": "printf('%064x', {})",
    "JSON": "{}",
}
_PG_FUNCTIONS = {
    "PAD": "lpad(CAST({} AS text), 7, '0')",
    "HEX": "lpad(to_hex({}), 16, '0')",
    "SHA": "lpad(to_hex({}), 64, '0')",
    "JSON": "CAST({} AS json)",
}


def _call(template: str, match: re.Match[str]) -> str:
    return template.format(match.group(1))


def _fill_sql(sqlite: bool) -> tuple[str, str]:
    """The INSERTs of every file and every batch, in one statement each."""
    values = _VALUES
    for name, template in (_SQLITE_FUNCTIONS if sqlite else _PG_FUNCTIONS).items():
        values = re.sub(
            rf"\b{name}\((CASE [^']*? END|'[^']*'|[^()]*)\)",
            functools.partial(_call, template),
            values,
        )
    if sqlite:
        files = (
            "WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < :n), "
            f"k AS (SELECT i, {_KIND} AS kind FROM g) "
            f"INSERT INTO files ({_COLUMNS}) SELECT {values} FROM k"
        )
        batches = (
            "WITH RECURSIVE g(b) AS (SELECT 1 UNION ALL SELECT b + 1 FROM g WHERE b < :batches) "
            f"INSERT INTO batches ({_BATCH_COLUMNS}) SELECT {_BATCHES} FROM g"
        )
    else:
        files = (
            f"INSERT INTO files ({_COLUMNS}) SELECT {values} FROM (SELECT i, "
            f"{_KIND} AS kind FROM generate_series(CAST(1 AS bigint), :n) AS i) AS k"
        )
        batches = (
            f"INSERT INTO batches ({_BATCH_COLUMNS}) SELECT {_BATCHES} "
            "FROM generate_series(1, :batches) AS b"
        )
    return files, batches


def fill(ledger: Ledger, n: int, *, now: float) -> float:
    """Fill an empty, migrated ledger with `n` files (and their batches); seconds taken."""
    done_batches = (n - QUEUED - 1) // PER_BATCH + 1
    params = {
        "n": n,
        "now": now,
        "queued": QUEUED,
        "indexing": INDEXING,
        "per_batch": PER_BATCH,
        "done_batches": done_batches,
        "batches": done_batches + QUEUED // PER_BATCH,
    }
    files, batches = _fill_sql(ledger.is_sqlite)
    started = time.monotonic()
    with ledger.engine.begin() as conn:
        conn.execute(text(batches), params)
        conn.execute(text(files), params)
        if not ledger.is_sqlite:
            conn.execute(text("SELECT setval('files_id_seq', (SELECT max(id) FROM files))"))
            conn.execute(text("SELECT setval('batches_id_seq', (SELECT max(id) FROM batches))"))
    if ledger.is_sqlite:
        with ledger.engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    else:
        with ledger.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    return round(time.monotonic() - started, 1)


# --- the commands, each in its own process ---------------------------------------


def run_command(
    args: list[str], env: dict[str, str], out: Path, *, timeout: float
) -> dict[str, Any]:
    """`reka-ingest ARGS` with stdout to `out`: wall seconds, peak RSS and CPU seconds
    of the command and its children."""
    err_path = out.with_suffix(".err")
    # Timed on a quiet disk: the fill's and the last export's writeback (hundreds of MB)
    # done before the clock starts, not during this command.
    os.sync()
    with out.open("wb") as stdout, err_path.open("wb") as stderr:
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "reka_ingest.cli", *args],
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            env=env,
        )
        sampler = Sampler({"cmd": proc.pid}, interval=0.1).start()
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise TimeoutError(f"reka-ingest {' '.join(args)} took over {timeout:.0f} s") from None
        finally:
            sampler.stop()
        seconds = time.monotonic() - started
    if code != 0:
        raise RuntimeError(f"reka-ingest {' '.join(args)}: exit {code}: {err_path.read_text()}")
    # The whole tree: an export's helper process (reka_ingest.cli.export_pair) counts
    # too, each process's own peak (VmHWM) added up, pages it shares counted twice.
    peaks, cpus = sampler.peak_rss_mb(), sampler.cpu_window()
    return {
        "seconds": round(seconds, 3),
        "peak_rss_mb": round(sum(peaks.values()), 1) if peaks else None,
        "cpu_s": round(sum(cpus.values()), 3) if cpus else None,
        "processes": len(peaks),
    }


def _lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))


def _commands(env: dict[str, str], n: int, work: Path, timeout: float) -> dict[str, Any]:
    # What any command costs before its first row (imports, settings, the ledger opened):
    # rows/s is reported with it (the whole process, as a user waits) and without it.
    start = run_command(
        ["files", "--csv", "--limit", "1"], env, work / "start.out", timeout=timeout
    )
    out: dict[str, Any] = {"start": start}
    for key, args, header_lines in (
        ("files_csv", ["files", "--csv"], 1),
        ("files_json", ["files", "--json"], 2),
    ):
        path = work / f"{key}.out"
        run = run_command(args, env, path, timeout=timeout)
        rows = _lines(path) - header_lines
        run.update(
            rows=rows,
            rows_per_s=round(rows / run["seconds"]),
            # None when the export took no longer than the start (small N, a noisy machine).
            rows_per_s_after_start=round(rows / (run["seconds"] - start["seconds"]))
            if run["seconds"] > start["seconds"] + 0.5
            else None,
            mb=_mb(path),
        )
        path.unlink()
        out[key] = run
    for key, args in (
        ("status", ["status"]),
        ("status_json", ["status", "--json"]),
        ("metrics_once", ["metrics", "--once"]),
    ):
        out[key] = run_command(args, env, work / f"{key}.out", timeout=timeout)
    return out


def _mb(path: Path) -> float:
    return round(path.stat().st_size / (1024 * 1024), 1)


QueryRun = Callable[[int], object]  # run k of one query


# --- the queries, in this process --------------------------------------------------


def _query_fns(
    ledger: Ledger, now: float, client: redis.Redis[bytes]
) -> dict[str, Callable[[int], object]]:
    """What status, a scrape and the two sweeps ask of the ledger; run k of each."""
    collector = IngestCollector(ledger, client, clock=lambda: now)

    def poll_sweep(k: int) -> None:
        due = claim_due_polls(ledger, now=now + k, limit=POLL_BATCH_LIMIT, lease=POLL_LEASE_SECONDS)
        assert len(due) == POLL_BATCH_LIMIT, f"only {len(due)} rows due"
        outcomes = [
            PollOutcome(
                file_id=d.file_id,
                state=FileState.INDEXING,  # still indexing: due again after the lease
                indexing_status=1,
                image_url=None,
                request_id="poll-bench",
                next_poll_at=now + k,
                poll_delay=8.0,
            )
            for d in due
        ]
        record_polls(ledger, outcomes, now=now + k)

    def reconcile_sweep(k: int) -> None:
        # Each run a requeue interval later: the lost batches are lost again.
        later = now + k * (REQUEUE_AFTER + 1)
        ids = batches_to_send(ledger, now=later, requeue_after=REQUEUE_AFTER, limit=SWEEP_LIMIT)
        assert ids, "the fill has batches to send again"
        resent_by_why(ledger, ids)

    return {
        "status_ms": lambda _k: summary(ledger, now=now),
        "metrics_ms": lambda _k: list(collector._from_ledger()),
        "poll_sweep_ms": poll_sweep,
        "reconcile_sweep_ms": reconcile_sweep,
    }


def _queries(ledgers: dict[str, tuple[Ledger, float]]) -> dict[str, dict[str, float]]:
    """Milliseconds per call, the median of QUERY_RUNS after a warm-up, per ledger. The
    ledgers take turns, query by query: a machine shared with others slows them alike."""
    client: redis.Redis[bytes] = redis.Redis(host="127.0.0.1", port=1)  # the ledger part only
    fns = {size: _query_fns(ledger, now, client) for size, (ledger, now) in ledgers.items()}
    times: dict[str, dict[str, list[float]]] = {size: {} for size in ledgers}
    try:
        for k in range(QUERY_RUNS + 1):
            for size, named in fns.items():
                for name, fn in named.items():
                    t0 = time.perf_counter()
                    fn(k)
                    if k:  # run 0 warms up: plans, caches, the first connection
                        times[size].setdefault(name, []).append(time.perf_counter() - t0)
    finally:
        client.close()
    return {
        size: {name: round(statistics.median(ts) * 1000, 2) for name, ts in named.items()}
        for size, named in times.items()
    }


# --- intake ------------------------------------------------------------------------


def _intake_once(ledger: Ledger, settings: IngestSettings, now: float, tag: str) -> float:
    """Seconds per file to record INTAKE_FILES new files the watcher's way: the
    recorder's groups (`record_files`) and the batches they fill."""
    batcher = Batcher(
        BatchLimits.from_settings(settings),
        create=ledger_batches(ledger),
        create_many=ledger_batch_groups(ledger),
        enqueue=lambda _batch_id: None,
    )
    recorder = Recorder(settings, ledger, batcher)
    files = [
        NewFile(
            path=f"burst/{tag}-{i:06d}.jpg",
            source_root="/srv/reka-ingest/inbox",
            work_path=f"/srv/reka-ingest/var/work/{tag}/{i:06d}.jpg",
            origin=Origin.EVENT,
            size=100_000 + i,
            mtime=now,
            # Real digests: new hashes land anywhere in the sha256 index, as they do.
            sha256=hashlib.sha256(f"{tag}/{i}".encode()).hexdigest(),
            seen_at=now,
        )
        for i in range(INTAKE_FILES)
    ]
    # On SQLite all the work is this process's: its CPU time, which other processes
    # on the machine do not disturb (wall time swung the ratio by a fifth between
    # runs). On PostgreSQL the server does part of it: wall time.
    clock = time.process_time if ledger.is_sqlite else time.perf_counter
    t0 = clock()
    for f in files:
        recorder.add(f)
    recorder.flush()
    batcher.flush()
    seconds = (clock() - t0) / INTAKE_FILES
    assert recorder.totals.queued == INTAKE_FILES, recorder.totals
    return seconds


def _intake(ledgers: dict[str, tuple[Ledger, float]]) -> dict[str, float]:
    """Microseconds per file on each ledger (the median of INTAKE_RUNS), taking turns."""
    settings = IngestSettings()
    runs: dict[str, list[float]] = {size: [] for size in ledgers}
    for run in range(INTAKE_RUNS):
        for size, (ledger, now) in ledgers.items():
            runs[size].append(_intake_once(ledger, settings, now, f"intake-{size}-{run}"))
    return {size: round(statistics.median(r) * 1e6, 1) for size, r in runs.items()}


# --- one ledger --------------------------------------------------------------------


def _ledger_url(db: str, postgres: Postgres | None, folder: Path) -> str:
    if db == "postgresql":
        assert postgres is not None
        return postgres.fresh_database()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'ledger.db'}"


def _at_size(
    db: str, n: int, *, postgres: Postgres | None, root: Path, redis_at: str, timeout: float
) -> tuple[dict[str, Any], Ledger, float]:
    """A ledger of `n` files, filled, and the commands run on it (the ledger left open)."""
    folder = root / f"{db}-{n}"
    shutil.rmtree(folder, ignore_errors=True)
    url = _ledger_url(db, postgres, folder / "var")
    ledger = open_ledger(url)
    now = time.time()
    try:
        print(f"scale: filling a {db} ledger with {n} files")
        result: dict[str, Any] = {"fill_s": fill(ledger, n, now=now)}
        if ledger.is_sqlite:
            result["ledger_mb"] = _mb(folder / "var" / "ledger.db")
        env = {
            **os.environ,
            "INGEST_DATA_DIR": str(folder / "var"),
            "INGEST_INBOX": str(folder / "inbox"),
            "INGEST_DATABASE_URL": url,
            "INGEST_REDIS_URL": redis_at,
            "INGEST_LOG_FORMAT": "json",
            "INGEST_LOG_LEVEL": "WARNING",
        }
        print(f"scale: the commands on {n} files ({db})")
        result.update(_commands(env, n, folder, timeout))
    except BaseException:
        ledger.dispose()
        raise
    return result, ledger, now


def _measure_ledgers(
    db: str, n: int, *, postgres: Postgres | None, root: Path, redis_at: str, timeout: float
) -> dict[str, dict[str, Any]]:
    """Both sizes filled and their commands run, then the queries and the intake on
    both (and on an empty ledger), taking turns; results per size ("0": empty)."""
    sizes: dict[str, dict[str, Any]] = {}
    ledgers: dict[str, tuple[Ledger, float]] = {}
    try:
        for size in (SMALL, n):
            result, ledger, now = _at_size(
                db, size, postgres=postgres, root=root, redis_at=redis_at, timeout=timeout
            )
            sizes[str(size)], ledgers[str(size)] = result, (ledger, now)
        empty = root / f"{db}-empty"
        shutil.rmtree(empty, ignore_errors=True)
        ledgers["0"] = (open_ledger(_ledger_url(db, postgres, empty / "var")), time.time())
        sizes["0"] = {}
        print(f"scale: the queries on {SMALL} and {n} files ({db}), taking turns")
        for key, ms in _queries({k: v for k, v in ledgers.items() if k != "0"}).items():
            sizes[key]["queries"] = ms
        print(f"scale: intake of {INTAKE_FILES} files on 0, {SMALL} and {n} files ({db})")
        for key, us in _intake(ledgers).items():
            sizes[key]["intake_us_per_file"] = us
    finally:
        for ledger, _ in ledgers.values():
            ledger.dispose()
        if not os.environ.get("BENCH_KEEP"):
            for name in (str(SMALL), str(n), "empty"):
                shutil.rmtree(root / f"{db}-{name}", ignore_errors=True)
    return sizes


# --- scan ----------------------------------------------------------------------------


def _scan(n: int, root: Path, timeout: float) -> dict[str, Any]:
    tree = root / f"tree-{n}"
    folder = root / f"scan-{n}"
    for p in (tree, folder):
        shutil.rmtree(p, ignore_errors=True)
    print(f"scale: a tree of {n} tiny files, then `reka-ingest scan`")
    t0 = time.monotonic()
    made = make_tree(tree, n)
    built = round(time.monotonic() - t0, 1)
    (folder / "var").mkdir(parents=True)
    env = {
        **os.environ,
        "INGEST_DATA_DIR": str(folder / "var"),
        "INGEST_INBOX": str(folder / "inbox"),
        "INGEST_MIN_FILE_AGE": "0",
        "INGEST_LOG_FORMAT": "json",
        "INGEST_LOG_LEVEL": "WARNING",
    }
    env.pop("INGEST_DATABASE_URL", None)
    try:
        args = ["scan", str(tree), "--no-enqueue"]
        run = run_command(args, env, folder / "scan.out", timeout=timeout)
        report = (folder / "scan.out").read_text()
    finally:
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(tree, ignore_errors=True)
            shutil.rmtree(folder, ignore_errors=True)
    files = made["images"] + made["copies"] + made["empty"]
    found = int(report.split("found:", 1)[1].split()[0])
    rate = round(files / run["seconds"])
    return {**run, "files": files, "found": found, "files_per_s": rate, "build_s": built}


# --- the scenario --------------------------------------------------------------------


def databases() -> list[str]:
    raw = os.environ.get("BENCH_SCALE_DATABASES", "sqlite")
    chosen = list(dict.fromkeys(x.strip().lower() for x in raw.split(",") if x.strip()))
    if unknown := sorted(set(chosen) - set(DATABASES)):
        raise SystemExit(f"BENCH_SCALE_DATABASES: unknown {unknown}; choose from {list(DATABASES)}")
    return chosen


def settings_from_env() -> tuple[int, int]:
    """BENCH_SCALE_N (ledger rows, 0: skip) and BENCH_SCALE_SCAN_N (tree files, 0: skip)."""
    return int(os.environ.get("BENCH_SCALE_N", "1000000")), int(
        os.environ.get("BENCH_SCALE_SCAN_N", "200000")
    )


def _by_measure(sizes: dict[str, dict[str, Any]], n: int) -> dict[str, Any]:
    """Per-size runs regrouped per measure: `files_csv: {small, big}`, `status: {small,
    big, query_ms: {small, big, ratio}}`, `poll_sweep: {small_ms, big_ms, ratio}`, ..."""
    small, big = sizes[str(SMALL)], sizes[str(n)]
    out: dict[str, Any] = {
        "fill_s": {"small": small["fill_s"], "big": big["fill_s"]},
        "ledger_mb": {"small": small.get("ledger_mb"), "big": big.get("ledger_mb")},
    }
    for key in ("start", "files_csv", "files_json", "status", "status_json", "metrics_once"):
        out[key] = {"small": small[key], "big": big[key]}
    for key, query in (
        ("status", "status_ms"),
        ("status_json", "status_ms"),  # the same query: --json only prints it otherwise
        ("metrics_once", "metrics_ms"),
    ):
        out[key]["query_ms"] = _pair(small["queries"][query], big["queries"][query])
    for key in ("poll_sweep", "reconcile_sweep"):
        pair = _pair(small["queries"][f"{key}_ms"], big["queries"][f"{key}_ms"])
        out[key] = {"small_ms": pair["small"], "big_ms": pair["big"], "ratio": pair["ratio"]}
    empty, loaded = sizes["0"]["intake_us_per_file"], big["intake_us_per_file"]
    out["intake"] = {
        "empty_us_per_file": empty,
        "big_us_per_file": loaded,
        "small_us_per_file": small["intake_us_per_file"],
        "ratio": round(loaded / empty, 3),
    }
    return out


def _pair(small: float, big: float) -> dict[str, float]:
    return {"small": small, "big": big, "ratio": round(big / small, 2) if small else 0.0}


def run_scale(
    n: int, *, root: Path, timeout: float, scan_n: int = 200_000, dbs: list[str] | None = None
) -> dict[str, Any]:
    """Everything above: SQLite's at the top, `postgresql` (same shape) when asked, `scan`."""
    result: dict[str, Any] = {"n": n, "small_n": SMALL}
    server = BundledRedis(root / "redis", free_port(), persist=False)
    server.start()
    try:
        for db in dbs or databases():
            postgres = Postgres() if db == "postgresql" else None
            try:
                sizes = _measure_ledgers(
                    db, n, postgres=postgres, root=root, redis_at=server.url, timeout=timeout
                )
            finally:
                if postgres is not None:
                    postgres.close()
            shaped = _by_measure(sizes, n)
            if db == "sqlite":
                result.update(shaped)
            else:
                result[db] = shaped
    finally:
        server.stop()
    if scan_n:
        result["scan"] = {str(k): _scan(k, root, timeout) for k in sorted({scan_n // 4, scan_n})}
    if not os.environ.get("BENCH_KEEP"):
        shutil.rmtree(root, ignore_errors=True)
    return result


# --- targets and the table -------------------------------------------------------------

EXPORT_RSS_MB: Final = 150
EXPORT_ROWS_PER_S: Final = 100_000
QUERY_GROWTH: Final = 2.0
INTAKE_GROWTH: Final = 1.2
SCAN_RSS_GROWTH: Final = 1.1


def _side_targets(side: dict[str, Any], n: int, suffix: str) -> dict[str, dict[str, Any]]:
    t: dict[str, dict[str, Any]] = {}
    for key, flag in (("files_csv", "--csv"), ("files_json", "--json")):
        if key not in side:
            continue
        big = side[key]["big"]
        t[f"scale files {flag} peak RSS MB{suffix}"] = {
            "value": big["peak_rss_mb"],
            "target": f"< {EXPORT_RSS_MB} at N={n}",
            "ok": (big["peak_rss_mb"] or 0) < EXPORT_RSS_MB and big["rows"] == n,
        }
        t[f"scale files {flag} rows/s{suffix}"] = {
            "value": big["rows_per_s"],
            "target": f">= {EXPORT_ROWS_PER_S} (wall, whole process)",
            "ok": big["rows_per_s"] >= EXPORT_ROWS_PER_S,
        }
    queries = (
        ("status", side.get("status", {}).get("query_ms")),
        ("metrics --once", side.get("metrics_once", {}).get("query_ms")),
        ("poll sweep", _ms_pair(side.get("poll_sweep"))),
        ("reconcile sweep", _ms_pair(side.get("reconcile_sweep"))),
    )
    for name, pair in queries:
        if pair:
            t[f"scale {name} query ms, N={n} / {SMALL}{suffix}"] = {
                "value": [pair["big"], pair["small"]],
                "target": f"<= {QUERY_GROWTH:g}x",
                "ok": pair["big"] <= QUERY_GROWTH * pair["small"],
            }
    if intake := side.get("intake"):
        t[f"scale intake us/file, N={n} / empty{suffix}"] = {
            "value": [intake["big_us_per_file"], intake["empty_us_per_file"]],
            "target": f"<= {INTAKE_GROWTH:g}x",
            "ok": intake["ratio"] <= INTAKE_GROWTH,
        }
    return t


def _ms_pair(entry: dict[str, Any] | None) -> dict[str, float] | None:
    return None if not entry else {"small": entry["small_ms"], "big": entry["big_ms"]}


def targets(scale: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """PASS/FAIL lines of `scale` (for bench/__main__.py's `_targets`)."""
    if not scale:
        return {}
    t = _side_targets(scale, scale["n"], "")
    if pg := scale.get("postgresql"):
        t.update(_side_targets(pg, scale["n"], ", postgresql"))
    runs = list((scale.get("scan") or {}).values())
    if len(runs) >= 2:
        peaks = [run["peak_rss_mb"] or 0.0 for run in runs]
        t["scale scan peak RSS flat in the tree (MB)"] = {
            "value": peaks,
            "target": f"largest within {SCAN_RSS_GROWTH - 1:.0%} of smallest",
            "ok": max(peaks) <= SCAN_RSS_GROWTH * min(peaks)
            and all(run["found"] == run["files"] for run in runs),
        }
    return t


def _side_lines(side: dict[str, Any], n: int, title: str) -> list[str]:
    out = [
        "",
        f"scale{title}: the same commands on {SMALL} and on {n} ledger rows (each command its "
        f"own process; filled in {side['fill_s']['small']} s and {side['fill_s']['big']} s)",
        f"  {'command':<22}{'rows':>9}{'wall s':>9}{'rows/s':>9}{'peak MB':>9}   "
        f"{'rows':>9}{'wall s':>9}{'rows/s':>9}{'peak MB':>9}",
    ]
    for key, name in (("files_csv", "files --csv"), ("files_json", "files --json")):
        cells = "   ".join(
            f"{r['rows']:>9}{r['seconds']:>9.2f}{r['rows_per_s']:>9}{r['peak_rss_mb'] or 0:>9.1f}"
            for r in (side[key]["small"], side[key]["big"])
        )
        out.append(f"  {name:<22}{cells}")
    out.append(
        "  rows/s after the command's start (`files --csv --limit 1`: "
        f"{side['start']['small']['seconds']:.2f} s and {side['start']['big']['seconds']:.2f} s): "
        + ", ".join(
            f"{key} {side[key]['small']['rows_per_s_after_start']} and "
            f"{side[key]['big']['rows_per_s_after_start']}"
            for key in ("files_csv", "files_json")
        )
    )
    out.append(
        f"  {'command':<22}{'wall s':>9}{'peak MB':>9}{'query ms':>10}   {'wall s':>9}"
        f"{'peak MB':>9}{'query ms':>10}{'ratio':>7}"
    )
    for key, name in (
        ("status", "status"),
        ("status_json", "status --json"),
        ("metrics_once", "metrics --once"),
    ):
        q = side[key]["query_ms"]
        small, big = side[key]["small"], side[key]["big"]
        out.append(
            f"  {name:<22}{small['seconds']:>9.2f}{small['peak_rss_mb'] or 0:>9.1f}"
            f"{q['small']:>10.2f}   {big['seconds']:>9.2f}{big['peak_rss_mb'] or 0:>9.1f}"
            f"{q['big']:>10.2f}{q['ratio']:>7.2f}"
        )
    for key, name in (("poll_sweep", "poll sweep (500)"), ("reconcile_sweep", "reconcile sweep")):
        e = side[key]
        out.append(
            f"  {name:<22}{'':>18}{e['small_ms']:>10.2f}   {'':>18}{e['big_ms']:>10.2f}"
            f"{e['ratio']:>7.2f}"
        )
    i = side["intake"]
    out.append(
        f"  intake, us per file (recorder, {INTAKE_FILES} new files): empty ledger "
        f"{i['empty_us_per_file']}, {SMALL} rows {i['small_us_per_file']}, {n} rows "
        f"{i['big_us_per_file']} (ratio to empty {i['ratio']})"
    )
    return out


def lines(scale: dict[str, Any] | None) -> list[str]:
    """The table of `scale` (for bench/report.py)."""
    if not scale:
        return []
    out = _side_lines(scale, scale["n"], "")
    if pg := scale.get("postgresql"):
        out += _side_lines(pg, scale["n"], " (PostgreSQL)")
    if scan := scale.get("scan"):
        out += [
            "",
            "scale: `reka-ingest scan TREE --no-enqueue` (its own process, empty SQLite ledger)",
            f"  {'files':>9}{'found':>9}{'wall s':>9}{'files/s':>9}{'peak MB':>9}{'CPU s':>8}",
        ]
        for run in scan.values():
            out.append(
                f"  {run['files']:>9}{run['found']:>9}{run['seconds']:>9.1f}"
                f"{run['files_per_s']:>9}{run['peak_rss_mb'] or 0:>9.1f}{run['cpu_s'] or 0:>8.1f}"
            )
    return out


def main() -> int:
    """`python -m bench.scale`: this scenario alone; its results replace `scale` (and
    its targets) in bench/results/latest.json, the rest of that file kept."""
    configure_logging("WARNING")  # the recorder's lines, in this process, are not the report
    n, scan_n = settings_from_env()
    timeout = float(os.environ.get("BENCH_TIMEOUT", "1800"))
    # Not under CACHE/runs: a `make bench` running meanwhile deletes that when it ends.
    scale = run_scale(n, root=CACHE / "runs-scale", timeout=timeout, scan_n=scan_n)
    path = RESULTS / "latest.json"
    r: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    r["scale"] = scale
    kept = {k: v for k, v in r.get("targets", {}).items() if not k.startswith("scale ")}
    r["targets"] = {**kept, **targets(scale)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(r, indent=2) + "\n")
    print("\n".join(lines(scale)))
    print("\ntargets:")
    for name, t in targets(scale).items():
        print(f"  {'PASS' if t['ok'] else 'FAIL'}  {name}: {t['value']} ({t['target']})")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

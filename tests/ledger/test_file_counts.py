"""`file_counts` (migration 0005): kept exact by triggers on `files`, on SQLite and
PostgreSQL, through inserts, updates of every counted column, deletes, rolled-back
transactions and concurrent writers; filled from the rows already there when a
ledger is migrated; and what `status` and the metrics read from it equals a
`GROUP BY` over `files`."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any, cast

import pytest
from alembic import command
from sqlalchemy import Table, delete, insert, select, text, update
from sqlalchemy.orm import Session

from reka_ingest.core.states import FileState, Origin, Reason
from reka_ingest.ledger import Ledger
from reka_ingest.ledger.counts import (
    LATENCY_BUCKETS,
    failed_by_reason,
    files_by_origin,
    files_by_state,
    indexed_latency,
)
from reka_ingest.ledger.db import _alembic_config
from reka_ingest.ledger.queries import summary
from reka_ingest.ledger.schema import File
from tests.support.counting import migration, moves_never_wait, run_writers

FILES = cast(Table, File.__table__)
STATES = [
    FileState.QUEUED,
    FileState.INDEXING,
    FileState.INDEXED,
    FileState.FAILED,
    FileState.DUPLICATE,
]
ORIGINS = [Origin.EVENT, Origin.SCAN, Origin.BACKFILL]
REASONS = [None, Reason.NOT_AN_IMAGE, Reason.INDEXING_FAILED, Reason.EMPTY_FILE]


def _row(i: int, rng: random.Random, prefix: str = "f") -> dict[str, Any]:
    state = rng.choice(STATES)
    seen = 1000.0 + i
    return {
        "path": f"{prefix}{i}.jpg",
        "source_root": "/in",
        "work_path": f"/work/{prefix}{i}.jpg",
        "origin": rng.choice(ORIGINS),
        "size": 1,
        "mtime": 1.0,
        "state": state,
        "reason": rng.choice(REASONS) if state == FileState.FAILED else None,
        "seen_at": seen,
        "indexed_at": seen + rng.choice([0.5, 3.0, 45.0, 5000.0, 100000.0])
        if state == FileState.INDEXED
        else None,
        "updated_at": seen,
    }


def _truth(ledger: Ledger) -> dict[str, Any]:
    """What a scan of `files` says, in the readers' shapes."""
    with ledger.read() as s:
        rows = s.execute(text("SELECT state, origin, reason, seen_at, indexed_at FROM files")).all()
    latencies = [
        r.indexed_at - r.seen_at for r in rows if r.state == "indexed" and r.indexed_at is not None
    ]
    return {
        "state": dict(Counter(r.state for r in rows)),
        "origin": dict(Counter(r.origin for r in rows)),
        "reason": dict(Counter(r.reason for r in rows if r.state == "failed")),
        "cumulative": [sum(1 for x in latencies if x <= b) for b in LATENCY_BUCKETS],
        "count": len(latencies),
        "sum": sum(latencies),
    }


def _counted(ledger: Ledger) -> dict[str, Any]:
    with ledger.read() as s:
        hist = indexed_latency(s)
        return {
            "state": files_by_state(s),
            "origin": files_by_origin(s),
            "reason": failed_by_reason(s),
            "cumulative": hist.cumulative,
            "count": hist.count,
            "sum": hist.total_seconds,
        }


def _assert_exact(ledger: Ledger) -> None:
    truth, counted = _truth(ledger), _counted(ledger)
    assert counted["sum"] == pytest.approx(truth.pop("sum"), rel=1e-9, abs=1e-6)
    counted.pop("sum")
    assert counted == truth


def _insert(ledger: Ledger, rows: list[dict[str, Any]]) -> None:
    with ledger.write() as s:
        s.execute(insert(FILES), rows)


def test_counts_follow_inserts_updates_and_deletes(ledger: Ledger) -> None:
    rng = random.Random(14)
    _assert_exact(ledger)  # empty
    _insert(ledger, [_row(i, rng) for i in range(600)])
    _assert_exact(ledger)
    with ledger.write() as s:
        # Every counted column, one statement each, many rows at once ...
        s.execute(update(FILES).where(FILES.c.id % 3 == 0).values(state=FileState.INDEXED))
        s.execute(update(FILES).where(FILES.c.id % 5 == 0).values(indexed_at=FILES.c.seen_at + 7))
        s.execute(update(FILES).where(FILES.c.id % 7 == 0).values(origin=Origin.RECOVERY))
        s.execute(
            update(FILES)
            .where(FILES.c.id % 11 == 0)
            .values(state=FileState.FAILED, reason=Reason.TRUNCATED_IMAGE)
        )
        s.execute(update(FILES).where(FILES.c.id % 13 == 0).values(seen_at=FILES.c.seen_at - 99))
        # ... a column that counts nothing, and an update that changes nothing.
        s.execute(update(FILES).values(next_poll_at=5.0, polls=FILES.c.polls + 1))
        s.execute(update(FILES).where(FILES.c.id % 2 == 0).values(state=FILES.c.state))
    _assert_exact(ledger)
    with ledger.write() as s:  # row by row, as the uploader and the poller write
        for i in range(1, 40):
            s.execute(
                update(FILES).where(FILES.c.id == i).values(state=rng.choice(STATES), reason=None)
            )
    _assert_exact(ledger)
    with ledger.write() as s:
        s.execute(delete(FILES).where(FILES.c.id % 4 == 0))
        s.execute(delete(FILES).where(FILES.c.id == 1))
    _assert_exact(ledger)
    with pytest.raises(RuntimeError), ledger.write() as s:  # a rolled-back write counts nothing
        s.execute(update(FILES).values(state=FileState.QUEUED))
        raise RuntimeError
    _assert_exact(ledger)
    with ledger.write() as s:
        s.execute(delete(FILES))
    _assert_exact(ledger)
    assert _counted(ledger)["state"] == {}


def test_status_and_metrics_read_the_same_numbers_as_a_scan(ledger: Ledger) -> None:
    rng = random.Random(7)
    _insert(ledger, [_row(i, rng) for i in range(300)])
    got = summary(ledger, now=5000.0)
    truth = _truth(ledger)["state"]
    assert {k: v for k, v in got.files.items() if v} == truth
    assert got.total == sum(truth.values())
    assert set(got.files) == {state.value for state in FileState}


def test_concurrent_writers_keep_the_counts_exact(ledger: Ledger) -> None:
    """Writers in threads, each its own connection (its own shard on PostgreSQL, unless
    two share one): inserts and moves between states interleaved, every transaction
    committed or (on a conflict the database reports) retried whole."""
    writers, rounds = 4, 15

    def write(s: Session, w: int, r: int) -> None:
        rng = random.Random(w * 1000 + r)  # a retry writes the same rows
        rows = [_row(w * 10_000 + r * 100 + k, rng, prefix=f"w{w}-") for k in range(20)]
        s.execute(insert(FILES), rows)
        s.execute(
            update(FILES)
            .where(FILES.c.id % writers == w, FILES.c.state == "queued")
            .values(state=FileState.INDEXING)
        )
        s.execute(
            update(FILES)
            .where(FILES.c.state == "indexing", FILES.c.id % 3 == r % 3)
            .values(state=FileState.INDEXED, indexed_at=FILES.c.seen_at + r)
        )

    run_writers(ledger, writers, rounds, write)
    _assert_exact(ledger)
    with ledger.read() as s:
        total = s.execute(text("SELECT count(*) FROM files")).scalar_one()
    assert total == writers * rounds * 20


def test_the_migration_counts_the_rows_already_there(tmp_path: Path, database_url: str) -> None:
    """A ledger at 0004 with rows in it: after 0005 its counts are exact at once, and
    they stay so; down to 0004 and up again rebuilds them."""
    ledger = Ledger(database_url)
    try:
        with ledger.engine.begin() as conn:
            cfg = _alembic_config(ledger.url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0004_superseded_by")
        rng = random.Random(3)
        with ledger.engine.begin() as conn:
            conn.execute(insert(FILES), [_row(i, rng) for i in range(400)])
        ledger.migrate()
        _assert_exact(ledger)
        _insert(ledger, [_row(i, rng, prefix="after") for i in range(50)])
        _assert_exact(ledger)
        with ledger.engine.begin() as conn:
            cfg = _alembic_config(ledger.url)
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0004_superseded_by")
            conn.execute(update(FILES).where(FILES.c.id < 100).values(state=FileState.FAILED))
        ledger.migrate()
        _assert_exact(ledger)
    finally:
        ledger.dispose()


def test_a_writer_never_waits_for_a_count_another_transaction_holds(ledger: Ledger) -> None:
    """More open transactions than shards, each having moved one file between the same
    two counts, all open at once: none waits for another's count row (each would give
    up after 2 s). So counts take no part in a lock cycle, whatever order a
    transaction moves files in (a file failed, then its duplicates). SQLite has one
    writer at a time: nothing to wait for there."""
    if ledger.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time")
    holders = migration("0005_file_counts").PG_SHARDS + 1  # two share a first choice
    rows = [_row(i, random.Random(i)) | {"state": FileState.QUEUED} for i in range(holders)]
    _insert(ledger, [r | {"reason": None, "indexed_at": None} for r in rows])
    with ledger.read() as s:
        ids = list(s.execute(select(FILES.c.id).order_by(FILES.c.id)).scalars())
    moves_never_wait(ledger, FILES, ids, {"state": FileState.INDEXING, "origin": Origin.EVENT})
    _assert_exact(ledger)
    assert _counted(ledger)["state"] == {FileState.INDEXING.value: holders}


def test_down_to_0009_and_up_again_the_counts_stay_exact(ledger: Ledger) -> None:
    """0010's downgrade gives 0005's trigger function back, and its upgrade takes it
    again: counts written under each are exact together."""
    rng = random.Random(10)
    _insert(ledger, [_row(i, rng) for i in range(200)])
    for revision, down in (("0009_batch_counts", True), ("0010_file_counts_no_wait", False)):
        with ledger.engine.begin() as conn:
            cfg = _alembic_config(ledger.url)
            cfg.attributes["connection"] = conn
            (command.downgrade if down else command.upgrade)(cfg, revision)
        with ledger.write() as s:
            s.execute(update(FILES).where(FILES.c.id % 3 == 0).values(state=FileState.INDEXED))
            s.execute(delete(FILES).where(FILES.c.id % 7 == 0))
        _insert(ledger, [_row(i, rng, prefix=revision) for i in range(30)])
        _assert_exact(ledger)


def test_the_triggers_buckets_are_the_metrics_buckets() -> None:
    assert migration("0005_file_counts").LATENCY_BUCKETS == LATENCY_BUCKETS

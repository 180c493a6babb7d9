"""`batch_counts` (migration 0009): kept exact by triggers on `batches`, on SQLite and
PostgreSQL, through inserts, updates of the state (many rows at once, row by row,
to the same state, swapped between rows in one statement), updates of other
columns, deletes, rolled-back transactions, the service's own batch writes and
concurrent writers; filled from the rows already there when a ledger is migrated;
and a metrics scrape reads its batches gauge from it, never from `batches`."""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path
from typing import Any, cast

import pytest
import redis
from alembic import command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Table, case, delete, event, insert, select, text, update
from sqlalchemy.orm import Session

from reka_ingest.core.states import BatchState, Origin
from reka_ingest.ledger import Ledger
from reka_ingest.ledger.counts import batches_by_state
from reka_ingest.ledger.db import _alembic_config
from reka_ingest.ledger.intake import NewFile, create_batches, record_files
from reka_ingest.ledger.schema import Batch
from reka_ingest.ledger.uploads import claim_batch, finish_batch, release_batch, split_batch
from reka_ingest.metrics.collector import IngestCollector
from tests.support.counting import migration, moves_never_wait, run_writers

BATCHES = cast(Table, Batch.__table__)
STATES = [state.value for state in BatchState]
NOW = 1_000_000.0


def _truth(ledger: Ledger) -> dict[str, int]:
    """What a scan of `batches` says."""
    with ledger.read() as s:
        rows = s.execute(text("SELECT state FROM batches")).all()
    return dict(Counter(r.state for r in rows))


def _counted(ledger: Ledger) -> dict[str, int]:
    with ledger.read() as s:
        return batches_by_state(s)


def _assert_exact(ledger: Ledger) -> None:
    assert _counted(ledger) == _truth(ledger)


def _rows(states: list[str]) -> list[dict[str, Any]]:
    return [{"state": state, "created_at": NOW} for state in states]


def _insert(ledger: Ledger, states: list[str]) -> None:
    with ledger.write() as s:
        s.execute(insert(BATCHES), _rows(states))


def test_counts_follow_inserts_updates_and_deletes(ledger: Ledger) -> None:
    rng = random.Random(14)
    _assert_exact(ledger)  # empty
    assert _counted(ledger) == {}
    _insert(ledger, [rng.choice(STATES) for _ in range(400)])
    _insert(ledger, [BatchState.QUEUED])  # one row alone
    _assert_exact(ledger)
    with ledger.write() as s:
        # Many rows at once, one statement each ...
        s.execute(update(BATCHES).where(BATCHES.c.id % 3 == 0).values(state=BatchState.DONE))
        s.execute(
            update(BATCHES)
            .where(BATCHES.c.id % 5 == 0, BATCHES.c.state != BatchState.DONE)
            .values(state=BatchState.UPLOADING, lease_until=NOW + 60)
        )
        # ... two states swapped in one statement (the deltas cancel out) ...
        s.execute(
            update(BATCHES)
            .where(BATCHES.c.state.in_([BatchState.QUEUED, BatchState.DEFERRED]))
            .values(
                state=case(
                    (BATCHES.c.state == BatchState.QUEUED, BatchState.DEFERRED),
                    else_=BatchState.QUEUED,
                )
            )
        )
        # ... columns that count nothing, and an update to the same state.
        s.execute(update(BATCHES).values(attempts=BATCHES.c.attempts + 1, claim_seq=7))
        s.execute(update(BATCHES).where(BATCHES.c.id % 2 == 0).values(state=BATCHES.c.state))
    _assert_exact(ledger)
    with ledger.write() as s:  # row by row, as claims and releases write
        for i in range(1, 60):
            s.execute(update(BATCHES).where(BATCHES.c.id == i).values(state=rng.choice(STATES)))
    _assert_exact(ledger)
    with ledger.write() as s:  # inserted and deleted in one transaction
        s.execute(insert(BATCHES), _rows([BatchState.QUEUED] * 5))
        s.execute(delete(BATCHES).where(BATCHES.c.id > 401))
        s.execute(delete(BATCHES).where(BATCHES.c.id % 4 == 0))
        s.execute(delete(BATCHES).where(BATCHES.c.id == 1))
    _assert_exact(ledger)
    with pytest.raises(RuntimeError), ledger.write() as s:  # a rolled-back write counts nothing
        s.execute(update(BATCHES).values(state=BatchState.SPLIT))
        s.execute(insert(BATCHES), _rows([BatchState.DONE] * 3))
        raise RuntimeError
    _assert_exact(ledger)
    with ledger.write() as s:
        s.execute(delete(BATCHES))
    _assert_exact(ledger)
    assert _counted(ledger) == {}


def _new(i: int) -> NewFile:
    return NewFile(
        path=f"b{i}.jpg",
        source_root="/in",
        work_path=f"/work/b{i}.jpg",
        origin=Origin.EVENT,
        size=10,
        mtime=1.0,
        sha256=f"{i:064x}",
        seen_at=5.0,
    )


def test_the_services_batch_writes_keep_the_counts(ledger: Ledger) -> None:
    """The writes the watcher and the workers make: batches made (and one made again,
    which deletes the new row in its own transaction), claimed, released to wait or
    to be sent again, split and finished."""
    records = record_files(ledger, [_new(i) for i in range(40)], now=NOW)
    ids = [r.file_id for r in records]
    groups = [ids[i : i + 5] for i in range(0, 40, 5)]
    made = create_batches(ledger, groups, now=NOW)
    _assert_exact(ledger)
    assert _counted(ledger) == {"queued": 8}
    assert create_batches(ledger, groups[:2], now=NOW) == made[:2]  # nothing made twice
    _assert_exact(ledger)
    for batch_id in made:
        assert claim_batch(ledger, batch_id, now=NOW, lease=60.0) is not None
    _assert_exact(ledger)
    release_batch(ledger, made[0], now=NOW, error="429", next_attempt_at=NOW + 60, hold=None)
    release_batch(ledger, made[1], now=NOW, error="lost", hold=None)
    halves = split_batch(ledger, made[2], now=NOW, error="413", hold=None)
    for batch_id in made[3:]:
        finish_batch(ledger, batch_id, now=NOW, request_id="req")
    _assert_exact(ledger)
    assert _counted(ledger) == {
        "deferred": 1,
        "queued": 1 + len(halves),
        "split": 1,
        "done": len(made) - 3,
    }
    claim_batch(ledger, made[1], now=NOW + 1, lease=60.0)
    claim_batch(ledger, made[1], now=NOW + 100, lease=60.0)  # its lease ran out: again
    _assert_exact(ledger)


# One operation on `batches`, as a statement a writer sends: (kind, a, b).
_OPS = st.one_of(
    st.tuples(st.just("insert"), st.lists(st.sampled_from(STATES), min_size=1, max_size=8)),
    st.tuples(
        st.just("move"),
        st.integers(1, 4),  # rows whose id % m == r ...
        st.integers(0, 3),
        st.sampled_from(STATES),  # ... to this state
    ),
    st.tuples(st.just("swap"), st.sampled_from(STATES), st.sampled_from(STATES)),
    st.tuples(st.just("same"), st.integers(1, 4), st.integers(0, 3)),
    st.tuples(st.just("other"), st.integers(1, 4), st.integers(0, 3)),
    st.tuples(st.just("delete"), st.integers(2, 6), st.integers(0, 5)),
)


def _apply(s: Any, op: tuple[Any, ...]) -> None:
    kind = op[0]
    if kind == "insert":
        s.execute(insert(BATCHES), _rows(op[1]))
        return
    if kind == "swap":  # rows in state a go to b and rows in b to a, in one statement
        _, a, b = op
        s.execute(
            update(BATCHES)
            .where(BATCHES.c.state.in_([a, b]))
            .values(state=case((BATCHES.c.state == a, b), else_=a))
        )
        return
    m, r = op[1], op[2]
    some = BATCHES.c.id % m == r % m
    if kind == "move":
        s.execute(update(BATCHES).where(some).values(state=op[3]))
    elif kind == "same":
        s.execute(update(BATCHES).where(some).values(state=BATCHES.c.state))
    elif kind == "other":
        s.execute(update(BATCHES).where(some).values(attempts=BATCHES.c.attempts + 1))
    else:
        s.execute(delete(BATCHES).where(some))


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    transactions=st.lists(
        st.tuples(st.lists(_OPS, min_size=1, max_size=5), st.booleans()), max_size=6
    )
)
def test_any_sequence_of_writes_keeps_the_counts_exact(
    ledger: Ledger, transactions: list[tuple[list[tuple[Any, ...]], bool]]
) -> None:
    """Each example adds its transactions (committed or rolled back) to the same ledger:
    the counts equal a scan of `batches` after every one."""
    for ops, commit in transactions:
        try:
            with ledger.write() as s:
                for op in ops:
                    _apply(s, op)
                if not commit:
                    raise _RolledBack
        except _RolledBack:
            pass
        _assert_exact(ledger)


class _RolledBack(Exception):
    """Raised inside a write to roll it back (the test's own, caught where raised)."""


def test_concurrent_writers_keep_the_counts_exact(ledger: Ledger) -> None:
    """Writers in threads, each its own connection (its own shard on PostgreSQL, unless
    two share one): batches made and moved between states, in overlapping rows, every
    transaction committed or (on a conflict the database reports) retried whole."""
    writers, rounds = 4, 15

    def write(s: Session, w: int, r: int) -> None:
        rng = random.Random(w * 1000 + r)  # a retry writes the same rows
        s.execute(insert(BATCHES), _rows([rng.choice(STATES) for _ in range(10)]))
        s.execute(
            update(BATCHES)
            .where(BATCHES.c.id % writers == w, BATCHES.c.state == "queued")
            .values(state=BatchState.UPLOADING)
        )
        s.execute(
            update(BATCHES)
            .where(BATCHES.c.state == "uploading", BATCHES.c.id % 3 == r % 3)
            .values(state=BatchState.DONE)
        )

    run_writers(ledger, writers, rounds, write)
    _assert_exact(ledger)
    assert sum(_counted(ledger).values()) == writers * rounds * 10


def test_a_writer_never_waits_for_a_count_another_transaction_holds(ledger: Ledger) -> None:
    """More open transactions than shards, each having moved one batch between the same
    two states, all open at once: none waits for another's count row (each would give
    up after 2 s). A writer holding a `file_counts` row can so never wait on a count
    of batches held by one that waits on it: no deadlock between the two tables,
    whatever order a transaction writes `files` and `batches` in. SQLite has one
    writer at a time: nothing to wait for there."""
    if ledger.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time")
    holders = (
        migration("0009_batch_counts").PG_SHARDS + 1
    )  # two of them share a first choice, whatever their pids
    _insert(ledger, [BatchState.QUEUED] * holders)
    with ledger.read() as s:
        ids = list(s.execute(select(BATCHES.c.id).order_by(BATCHES.c.id)).scalars())
    moves_never_wait(ledger, BATCHES, ids, {"state": BatchState.UPLOADING, "lease_until": NOW + 60})
    _assert_exact(ledger)
    assert _counted(ledger) == {BatchState.UPLOADING.value: holders}


def _migrate_to(ledger: Ledger, revision: str, *, down: bool = False) -> None:
    with ledger.engine.begin() as conn:
        cfg = _alembic_config(ledger.url)
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)


def test_the_migration_counts_the_batches_already_there(database_url: str) -> None:
    """A ledger at 0008 with batches in it: after 0009 its counts are exact at once, and
    they stay so; down to 0008 (the table and its triggers gone) and up again rebuilds
    them."""
    ledger = Ledger(database_url)
    try:
        _migrate_to(ledger, "0008_unbatched")
        rng = random.Random(3)
        with ledger.engine.begin() as conn:
            conn.execute(insert(BATCHES), _rows([rng.choice(STATES) for _ in range(300)]))
        ledger.migrate()
        _assert_exact(ledger)
        assert sum(_counted(ledger).values()) == 300
        _insert(ledger, [BatchState.QUEUED] * 20)
        with ledger.write() as s:
            s.execute(update(BATCHES).where(BATCHES.c.id < 50).values(state=BatchState.SPLIT))
        _assert_exact(ledger)
        _migrate_to(ledger, "0008_unbatched", down=True)
        with ledger.engine.begin() as conn:
            names = {
                r[0]
                for r in conn.execute(
                    text(
                        "SELECT name FROM sqlite_master"
                        if ledger.is_sqlite
                        else "SELECT tablename FROM pg_tables"
                    )
                )
            }
            assert "batch_counts" not in names
            conn.execute(update(BATCHES).where(BATCHES.c.id > 250).values(state=BatchState.DONE))
            conn.execute(delete(BATCHES).where(BATCHES.c.id % 7 == 0))
        ledger.migrate()
        _assert_exact(ledger)
    finally:
        ledger.dispose()


def test_a_scrape_reads_the_batch_gauge_from_the_counts_not_from_batches(
    ledger: Ledger, tmp_path: Path
) -> None:
    """The gauge equals a scan of `batches`, and no statement of the scrape reads
    `batches` (whose rows grow with every batch ever made)."""
    _insert(ledger, ["done"] * 30 + ["queued"] * 3 + ["deferred"] * 2 + ["uploading"])
    sent: list[str] = []

    def record(_c: Any, _cur: Any, statement: str, *_rest: Any) -> None:
        sent.append(statement)

    client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    event.listen(ledger.engine, "before_cursor_execute", record)
    try:
        metrics = list(IngestCollector(ledger, client, clock=lambda: NOW).collect())
    finally:
        event.remove(ledger.engine, "before_cursor_execute", record)
        client.close()
    [gauge] = [m for m in metrics if m.name == "reka_ingest_batches"]
    got = {sample.labels["state"]: sample.value for sample in gauge.samples}
    assert got == {state: float(_truth(ledger).get(state, 0)) for state in STATES}
    assert sent, "the scrape read the ledger"
    assert not [sql for sql in sent if re.search(r"\bbatches\b", sql)]

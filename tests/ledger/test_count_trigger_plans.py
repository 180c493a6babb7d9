"""The count triggers on PostgreSQL (`file_counts_apply`, `batch_counts_apply`, migration
0012) read an UPDATE's transition tables once each, whatever plan the connection
kept: they never join them.

PL/pgSQL plans a trigger's queries once per connection, for the transition tables'
sizes at its first statement, and keeps the plan. A join of the old and new rows
planned for one row is a nested loop, kept for the UPDATE of 20,000 rows (the
copies of one image, given its `image_id`) that followed on a pooled connection:
quadratic, minutes of a worker. Here one connection runs a one-row UPDATE, then an
UPDATE of thousands, with auto_explain showing every plan the triggers run; a plan
that reads a transition table inside a join fails the test, naming it. The counts
stay exact through both.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any, cast

import psycopg
import pytest
from sqlalchemy import Table, insert, text, update
from sqlalchemy.engine import Connection

from reka_ingest.core.states import BatchState, FileState, Origin
from reka_ingest.ledger import Ledger
from reka_ingest.ledger.counts import batches_by_state, files_by_state
from reka_ingest.ledger.schema import Batch, File
from tests.support.new_files import file_row

FILES = cast(Table, File.__table__)
BATCHES = cast(Table, Batch.__table__)
COPIES = 3_000
NOW = 1_000_000.0
_JOINS = ("Nested Loop", "Hash Join", "Merge Join")


@pytest.fixture
def plans(ledger: Ledger) -> Iterator[tuple[Connection, list[str]]]:
    """One connection of the ledger's, with every plan its statements' triggers run
    sent back to it as a notice (auto_explain), and the list those notices land in."""
    if ledger.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's statement triggers; SQLite counts with row triggers")
    seen: list[str] = []
    with ledger.engine.connect() as conn:
        driver = cast(psycopg.Connection[Any], conn.connection.driver_connection)
        driver.add_notice_handler(lambda diag: seen.append(diag.message_primary or ""))
        for setting in (
            "LOAD 'auto_explain'",
            "SET auto_explain.log_min_duration = 0",
            "SET auto_explain.log_nested_statements = on",
            "SET auto_explain.log_level = notice",
        ):
            conn.execute(text(setting))
        conn.commit()
        yield conn, seen


def _trigger_plans(seen: list[str]) -> list[str]:
    return [plan for plan in seen if "Named Tuplestore Scan" in plan]


def test_an_update_of_thousands_after_one_row_reads_each_transition_table_once(
    ledger: Ledger, plans: tuple[Connection, list[str]]
) -> None:
    conn, seen = plans
    original = conn.execute(
        insert(FILES).values(file_row(0, origin=Origin.URL, state=FileState.UPLOADING))
    ).inserted_primary_key
    assert original is not None
    conn.execute(
        insert(FILES),
        [
            file_row(i, origin=Origin.URL, seen_at=NOW + i, duplicate_of=original[0])
            for i in range(1, COPIES + 1)
        ],
    )
    conn.commit()
    # The connection's first UPDATE touches one row: the plan it keeps is made for that.
    conn.execute(update(FILES).where(FILES.c.id == original[0]).values(state=FileState.INDEXING))
    conn.commit()
    # Then the copies take the image's id (nothing counted moves), then a state.
    conn.execute(update(FILES).where(FILES.c.duplicate_of == original[0]).values(image_id="img"))
    conn.execute(
        update(FILES)
        .where(FILES.c.duplicate_of == original[0], FILES.c.id % 2 == 0)
        .values(state=FileState.INDEXED, indexed_at=FILES.c.seen_at + 3)
    )
    conn.commit()

    ran = _trigger_plans(seen)
    assert ran, "auto_explain showed no plan of the count triggers"
    joined = [plan for plan in ran if any(join in plan for join in _JOINS)]
    assert not joined, "a count trigger joins its transition tables:\n" + "\n\n".join(joined)
    with ledger.read() as s:
        assert files_by_state(s) == {
            FileState.INDEXING.value: 1,
            FileState.DUPLICATE.value: COPIES - COPIES // 2,
            FileState.INDEXED.value: COPIES // 2,
        }


def test_the_batch_triggers_read_each_transition_table_once(
    ledger: Ledger, plans: tuple[Connection, list[str]]
) -> None:
    conn, seen = plans
    conn.execute(insert(BATCHES), [{"state": BatchState.QUEUED, "created_at": NOW}] * COPIES)
    conn.commit()
    first = conn.execute(text("SELECT min(id) FROM batches")).scalar_one()
    conn.execute(update(BATCHES).where(BATCHES.c.id == first).values(state=BatchState.UPLOADING))
    conn.commit()
    conn.execute(update(BATCHES).where(BATCHES.c.id % 3 == 0).values(state=BatchState.DONE))
    conn.execute(update(BATCHES).values(queued_at=NOW))
    conn.commit()

    joined = [plan for plan in _trigger_plans(seen) if any(join in plan for join in _JOINS)]
    assert _trigger_plans(seen), "auto_explain showed no plan of the count triggers"
    assert not joined, "a count trigger joins its transition tables:\n" + "\n\n".join(joined)
    with ledger.read() as s:
        truth = Counter(r.state for r in s.execute(text("SELECT state FROM batches")))
        assert batches_by_state(s) == dict(truth)

"""file counts without waiting: on PostgreSQL a writer adds to a `file_counts` row no
other transaction holds

Migration 0005's statement triggers added each statement's deltas, in key order,
to the writing connection's shard (`pg_backend_pid() % 16`), an UPSERT that waits
while another transaction holds that row. Two connections share a shard often
enough (a worker's processes, its pollers, watchers on other machines), and a
transaction that moves files in two statements (a file failed, then its
duplicates with it; an upload recorded, then its copies given back) locks rows
in the order of its statements, not in key order across them: two such
transactions on one shard could each hold the row the other waits for, a
deadlock PostgreSQL ends by aborting one of them.

Now each key's delta goes to a row of that key no other transaction holds (`FOR
UPDATE SKIP LOCKED`, the connection's own shard first), or to a new row when
every one is held (numbered past the shards by the connection's pid, unique
among live connections; `ON CONFLICT DO NOTHING` never waits for a committed
row). No writer ever waits for a count, so counts take no part in any lock
cycle, whatever order a transaction writes in (as `batch_counts`, migration
0009, does for batches). A key has as many rows as writers ever held it at
once, not more as files come; readers sum over the shards as before, and the
counts stay exact: every delta is added, under its row's lock, in the writer's
own transaction. SQLite (one writer at a time) is unchanged.

Revision ID: 0010_file_counts_no_wait
Revises: 0009_batch_counts
Create Date: 2026-11-28 12:00:00
"""

# Every statement here is built from constants of this file and of 0005: no input.
# ruff: noqa: S608

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

revision = "0010_file_counts_no_wait"
down_revision = "0009_batch_counts"
branch_labels = None
depends_on = None

PID_SPAN = 1 << 22  # PostgreSQL's pids are below this (Linux's pid_max at most)


def _migration_0005() -> ModuleType:
    """0005's module: its key, its row expressions and, for the downgrade, its function."""
    path = Path(__file__).with_name("0005_file_counts.py")
    spec = importlib.util.spec_from_file_location("reka_ingest_migration_0005", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _add_function(shards: int) -> str:
    """One key's delta, added to a row of that key no other transaction holds."""
    key = "state = st AND origin = og AND reason = rs AND bucket = bk"
    return f"""
CREATE FUNCTION file_counts_add(
    st text, og text, rs text, bk integer, delta bigint, lat double precision
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    free integer;
    spare integer := {shards} + pg_backend_pid();
BEGIN
    SELECT shard INTO free FROM file_counts WHERE {key}
        ORDER BY shard <> pg_backend_pid() % {shards}, shard
        LIMIT 1 FOR UPDATE SKIP LOCKED;
    IF FOUND THEN
        UPDATE file_counts SET n = n + delta, latency_sum = latency_sum + lat
            WHERE {key} AND shard = free;
        RETURN;
    END IF;
    LOOP
        INSERT INTO file_counts (state, origin, reason, bucket, shard, n, latency_sum)
            VALUES (st, og, rs, bk, spare, delta, lat)
            ON CONFLICT (state, origin, reason, bucket, shard) DO NOTHING;
        EXIT WHEN FOUND;
        spare := spare + {PID_SPAN};
    END LOOP;
END
$$
"""


def _apply_function(m: ModuleType) -> str:
    """0005's trigger function, each statement's summed deltas added key by key."""

    def add(deltas: str) -> str:
        return (
            f"FOR moved IN SELECT state, origin, reason, bucket, sum(d) AS d, sum(l) AS l "
            f"FROM ({deltas}) AS x GROUP BY state, origin, reason, bucket "
            "HAVING sum(d) <> 0 OR sum(l) <> 0 ORDER BY state, origin, reason, bucket LOOP "
            "PERFORM file_counts_add(moved.state, moved.origin, moved.reason, moved.bucket, "
            "moved.d, moved.l); END LOOP;"
        )

    key, latency, moved = m._key, m._latency, m._MOVED
    inserted = f"SELECT {key('r')}, 1 AS d, {latency('r')} AS l FROM new_rows AS r"
    deleted = f"SELECT {key('r')}, -1 AS d, -({latency('r')}) AS l FROM old_rows AS r"
    updated = (
        f"SELECT {key('o')}, -1 AS d, -({latency('o')}) AS l {moved} "
        f"UNION ALL SELECT {key('n')}, 1 AS d, {latency('n')} AS l {moved}"
    )
    return f"""
CREATE OR REPLACE FUNCTION file_counts_apply() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    moved record;
BEGIN
    IF TG_OP = 'INSERT' THEN
        {add(inserted)}
    ELSIF TG_OP = 'DELETE' THEN
        {add(deleted)}
    ELSE
        {add(updated)}
    END IF;
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    m = _migration_0005()
    op.execute(_add_function(m.PG_SHARDS))
    op.execute(_apply_function(m))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    m = _migration_0005()
    restored = m._PG_FUNCTION
    op.execute(restored.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
    op.execute(
        "DROP FUNCTION IF EXISTS "
        "file_counts_add(text, text, text, integer, bigint, double precision)"
    )

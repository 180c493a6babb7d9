"""batch counts: `batch_counts`, batches by state kept exact by triggers on `batches`

A metrics scrape counted batches with `GROUP BY state`, which reads the whole
`ix_batches_state` index: one entry per batch ever made, a fiftieth of `files`
and growing with it (2.5 ms a scrape at 20,000 batches, 27 ms at 200,000, on
SQLite). `batch_counts` holds the same numbers, one row per (state, shard) with
its count, so reading them costs the same at any ledger size (as `file_counts`,
migration 0005, does for files).

The counts are kept by triggers on `batches`, in the writer's own transaction,
so they are exact whenever the rows are (every insert, delete and update of
`state`, whatever writes it):
- SQLite: one trigger per row event, an UPSERT into shard 0 (SQLite has one
  writer at a time: no hot row to spread); an update fires it only when it
  changes the state.
- PostgreSQL: one trigger per statement (transition tables, which PostgreSQL
  allows on no trigger with a column list: every UPDATE of `batches` runs it),
  its changes summed by state and each added to a row of that state that no
  other transaction holds (`FOR UPDATE SKIP LOCKED`, the connection's own shard
  `pg_backend_pid() % 16` first), or to a new row when every one is held. So a
  writer never waits for a count of batches: a transaction that writes `files`
  and `batches` in one order (holding a `file_counts` row) can never wait on
  one that wrote them in the other order, which a shared shard row would let
  deadlock. The rows of a state are as many as writers ever held them at
  once, not more as batches come. An UPDATE that moves no batch between states
  adds nothing.

The migration fills the table from the rows already there.

Revision ID: 0009_batch_counts
Revises: 0008_unbatched
Create Date: 2026-11-28 11:30:00
"""

# Every statement here is built from this file's own constants: no input reaches them.
# ruff: noqa: S608

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_batch_counts"
down_revision = "0008_unbatched"
branch_labels = None
depends_on = None

PG_SHARDS = 16
KEY = "state, shard"

# --- SQLite: a trigger per row ------------------------------------------------------


def _sqlite_add(r: str, sign: str) -> str:
    return (
        f"INSERT INTO batch_counts ({KEY}, n) VALUES ({r}.state, 0, {sign}1) "
        f"ON CONFLICT ({KEY}) DO UPDATE SET n = n + excluded.n;"
    )


_SQLITE = (
    f"CREATE TRIGGER batch_counts_insert AFTER INSERT ON batches "
    f"BEGIN {_sqlite_add('NEW', '+')} END",
    f"CREATE TRIGGER batch_counts_delete AFTER DELETE ON batches "
    f"BEGIN {_sqlite_add('OLD', '-')} END",
    "CREATE TRIGGER batch_counts_update AFTER UPDATE OF state ON batches "
    "WHEN OLD.state IS NOT NEW.state "
    f"BEGIN {_sqlite_add('OLD', '-')} {_sqlite_add('NEW', '+')} END",
)

# --- PostgreSQL: a trigger per statement ---------------------------------------------


def _pg_add(deltas: str) -> str:
    """Add the summed deltas of `deltas` (rows of state, d), one state at a time in state
    order, each to a row no other transaction holds; a state whose deltas cancel out
    adds nothing."""
    return (
        f"FOR moved IN SELECT state, sum(d) AS d FROM ({deltas}) AS x "
        f"GROUP BY state HAVING sum(d) <> 0 ORDER BY state LOOP "
        f"PERFORM batch_counts_add(moved.state, moved.d); END LOOP;"
    )


# One state's delta, added without waiting for another transaction's lock: to a free
# row of that state (this connection's own shard first), else to a new row, numbered
# past the shards by this connection's pid (unique among live connections; a row a
# dead connection of the same pid left, held by someone now, moves it on by PID_SPAN).
# ON CONFLICT DO NOTHING never waits for a committed row, as DO UPDATE would.
PID_SPAN = 1 << 22  # PostgreSQL's pids are below this (Linux's pid_max at most)
_PG_ADD_FUNCTION = f"""
CREATE FUNCTION batch_counts_add(st text, delta bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    free integer;
    spare integer := {PG_SHARDS} + pg_backend_pid();
BEGIN
    SELECT shard INTO free FROM batch_counts WHERE state = st
        ORDER BY shard <> pg_backend_pid() % {PG_SHARDS}, shard
        LIMIT 1 FOR UPDATE SKIP LOCKED;
    IF FOUND THEN
        UPDATE batch_counts SET n = n + delta WHERE state = st AND shard = free;
        RETURN;
    END IF;
    LOOP
        INSERT INTO batch_counts ({KEY}, n) VALUES (st, spare, delta)
            ON CONFLICT ({KEY}) DO NOTHING;
        EXIT WHEN FOUND;
        spare := spare + {PID_SPAN};
    END LOOP;
END
$$
"""


# The batches an UPDATE moved between states: only those.
_MOVED = (
    "FROM old_rows AS o JOIN new_rows AS n ON n.id = o.id WHERE o.state IS DISTINCT FROM n.state"
)

_PG_FUNCTION = f"""
CREATE FUNCTION batch_counts_apply() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    moved record;
BEGIN
    IF TG_OP = 'INSERT' THEN
        {_pg_add("SELECT r.state AS state, 1 AS d FROM new_rows AS r")}
    ELSIF TG_OP = 'DELETE' THEN
        {_pg_add("SELECT r.state AS state, -1 AS d FROM old_rows AS r")}
    ELSE
        {
    _pg_add(
        f"SELECT o.state AS state, -1 AS d {_MOVED} "
        f"UNION ALL SELECT n.state AS state, 1 AS d {_MOVED}"
    )
}
    END IF;
    RETURN NULL;
END
$$
"""
_PG = (
    _PG_ADD_FUNCTION,
    _PG_FUNCTION,
    "CREATE TRIGGER batch_counts_insert AFTER INSERT ON batches REFERENCING NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION batch_counts_apply()",
    "CREATE TRIGGER batch_counts_update AFTER UPDATE ON batches "
    "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION batch_counts_apply()",
    "CREATE TRIGGER batch_counts_delete AFTER DELETE ON batches REFERENCING OLD TABLE AS old_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION batch_counts_apply()",
)

_BACKFILL = (
    f"INSERT INTO batch_counts ({KEY}, n) SELECT state, 0, count(*) FROM batches GROUP BY state"
)


def upgrade() -> None:
    op.create_table(
        "batch_counts",
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("state", "shard", name=op.f("pk_batch_counts")),
    )
    sqlite = op.get_bind().dialect.name == "sqlite"
    if not sqlite:  # no writer may change `batches` between the backfill and the triggers
        op.execute("LOCK TABLE batches IN SHARE ROW EXCLUSIVE MODE")
    for statement in _SQLITE if sqlite else _PG:
        op.execute(statement)
    op.execute(_BACKFILL)


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for event in ("insert", "update", "delete"):
        op.execute(
            f"DROP TRIGGER IF EXISTS batch_counts_{event}" + ("" if sqlite else " ON batches")
        )
    if not sqlite:
        op.execute("DROP FUNCTION IF EXISTS batch_counts_apply()")
        op.execute("DROP FUNCTION IF EXISTS batch_counts_add(text, bigint)")
    op.drop_table("batch_counts")

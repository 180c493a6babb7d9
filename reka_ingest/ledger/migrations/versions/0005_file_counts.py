"""file counts: `file_counts`, the ledger's counts kept exact by triggers on `files`

`status` and a metrics scrape counted files with `GROUP BY state` (and by
origin, failed files by reason, indexed files by drop-to-indexed latency): each
of those reads a whole index, which at a million rows takes longer than
everything else they do together. `file_counts` holds the same numbers, one row
per (state, origin, reason, latency bucket, shard) with its count and the sum of
its latencies, so reading them costs the same at any ledger size.

The counts are kept by triggers on `files`, in the writer's own transaction, so
they are exact whenever the rows are (every insert, delete and update of a
counted column, whatever writes it):
- SQLite: one trigger per row event, an UPSERT into shard 0 (SQLite has one
  writer at a time: no hot row to spread).
- PostgreSQL: one trigger per statement (transition tables), its changes summed
  by key and added, in key order, to the shard of the writing connection
  (`pg_backend_pid() % 16`): concurrent writers mostly add to different rows, and
  a statement touching 500 rows adds to a handful of counters, not 500 times.
  An UPDATE that moves no count adds nothing.

`reason` is '' for none; `bucket` is -1 outside the histogram (a row not
indexed, or without `indexed_at`), else the index of the first bound of
LATENCY_BUCKETS (reka_ingest.ledger.counts, frozen here as they were) the
latency (`indexed_at - seen_at`) is within, or len(LATENCY_BUCKETS) beyond the
last. The migration fills the table from the rows already there.

Revision ID: 0005_file_counts
Revises: 0004_superseded_by
Create Date: 2026-12-05 12:00:00
"""

# Every statement here is built from this file's own constants: no input reaches them.
# ruff: noqa: S608

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_file_counts"
down_revision = "0004_superseded_by"
branch_labels = None
depends_on = None

LATENCY_BUCKETS = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
PG_SHARDS = 16
KEY = "state, origin, reason, bucket, shard"


def _in_histogram(r: str) -> str:
    return f"({r}.state = 'indexed' AND {r}.indexed_at IS NOT NULL)"


def _bucket(r: str) -> str:
    steps = " ".join(
        f"WHEN {r}.indexed_at - {r}.seen_at <= {bound} THEN {i}"
        for i, bound in enumerate(LATENCY_BUCKETS)
    )
    return (
        f"CASE WHEN {_in_histogram(r)} THEN CASE {steps} ELSE {len(LATENCY_BUCKETS)} END "
        "ELSE -1 END"
    )


def _latency(r: str) -> str:
    return f"CASE WHEN {_in_histogram(r)} THEN {r}.indexed_at - {r}.seen_at ELSE 0.0 END"


def _key(r: str) -> str:
    """A row's counted key (without the shard), as columns state, origin, reason, bucket."""
    return (
        f"{r}.state AS state, {r}.origin AS origin, coalesce({r}.reason, '') AS reason, "
        f"{_bucket(r)} AS bucket"
    )


# --- SQLite: a trigger per row ------------------------------------------------------


def _sqlite_add(r: str, sign: str) -> str:
    return (
        f"INSERT INTO file_counts ({KEY}, n, latency_sum) "
        f"VALUES ({r}.state, {r}.origin, coalesce({r}.reason, ''), {_bucket(r)}, 0, "
        f"{sign}1, {sign}({_latency(r)})) "
        f"ON CONFLICT ({KEY}) DO UPDATE SET n = n + excluded.n, "
        "latency_sum = latency_sum + excluded.latency_sum;"
    )


_COUNTED = ("state", "origin", "reason", "seen_at", "indexed_at")
_SQLITE = (
    f"CREATE TRIGGER file_counts_insert AFTER INSERT ON files BEGIN {_sqlite_add('NEW', '+')} END",
    f"CREATE TRIGGER file_counts_delete AFTER DELETE ON files BEGIN {_sqlite_add('OLD', '-')} END",
    f"CREATE TRIGGER file_counts_update AFTER UPDATE OF {', '.join(_COUNTED)} ON files "
    f"WHEN {' OR '.join(f'OLD.{c} IS NOT NEW.{c}' for c in _COUNTED)} "
    f"BEGIN {_sqlite_add('OLD', '-')} {_sqlite_add('NEW', '+')} END",
)

# --- PostgreSQL: a trigger per statement ---------------------------------------------


def _pg_add(deltas: str) -> str:
    return (
        f"INSERT INTO file_counts AS c ({KEY}, n, latency_sum) "
        f"SELECT state, origin, reason, bucket, pg_backend_pid() % {PG_SHARDS}, sum(d), sum(l) "
        f"FROM ({deltas}) AS x GROUP BY state, origin, reason, bucket "
        "ORDER BY state, origin, reason, bucket "
        f"ON CONFLICT ({KEY}) DO UPDATE SET n = c.n + excluded.n, "
        "latency_sum = c.latency_sum + excluded.latency_sum;"
    )


# The rows an UPDATE moved between counts (or whose latency it changed): only those.
_MOVED = (
    "FROM old_rows AS o JOIN new_rows AS n ON n.id = o.id WHERE "
    f"({', '.join(f'o.{c}' for c in _COUNTED)}) IS DISTINCT FROM "
    f"({', '.join(f'n.{c}' for c in _COUNTED)})"
)

_PG_FUNCTION = f"""
CREATE FUNCTION file_counts_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        {_pg_add(f"SELECT {_key('r')}, 1 AS d, {_latency('r')} AS l FROM new_rows AS r")}
    ELSIF TG_OP = 'DELETE' THEN
        {_pg_add(f"SELECT {_key('r')}, -1 AS d, -({_latency('r')}) AS l FROM old_rows AS r")}
    ELSE
        {
    _pg_add(
        f"SELECT {_key('o')}, -1 AS d, -({_latency('o')}) AS l {_MOVED} "
        f"UNION ALL SELECT {_key('n')}, 1 AS d, {_latency('n')} AS l {_MOVED}"
    )
}
    END IF;
    RETURN NULL;
END
$$
"""
_PG = (
    _PG_FUNCTION,
    "CREATE TRIGGER file_counts_insert AFTER INSERT ON files REFERENCING NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION file_counts_apply()",
    "CREATE TRIGGER file_counts_update AFTER UPDATE ON files "
    "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION file_counts_apply()",
    "CREATE TRIGGER file_counts_delete AFTER DELETE ON files REFERENCING OLD TABLE AS old_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION file_counts_apply()",
)

_BACKFILL = (
    f"INSERT INTO file_counts ({KEY}, n, latency_sum) "
    f"SELECT state, origin, reason, bucket, 0, count(*), sum(l) "
    f"FROM (SELECT {_key('f')}, {_latency('f')} AS l FROM files AS f) AS x "
    "GROUP BY state, origin, reason, bucket"
)


def upgrade() -> None:
    op.create_table(
        "file_counts",
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("bucket", sa.Integer(), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("latency_sum", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint(
            "state", "origin", "reason", "bucket", "shard", name=op.f("pk_file_counts")
        ),
    )
    sqlite = op.get_bind().dialect.name == "sqlite"
    if not sqlite:  # no writer may change `files` between the backfill and the triggers
        op.execute("LOCK TABLE files IN SHARE ROW EXCLUSIVE MODE")
    for statement in _SQLITE if sqlite else _PG:
        op.execute(statement)
    op.execute(_BACKFILL)


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for event in ("insert", "update", "delete"):
        op.execute(f"DROP TRIGGER IF EXISTS file_counts_{event}" + ("" if sqlite else " ON files"))
    if not sqlite:
        op.execute("DROP FUNCTION IF EXISTS file_counts_apply()")
    op.drop_table("file_counts")

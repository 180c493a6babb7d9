"""counts without a join: an UPDATE's count triggers read each transition table once

The statement triggers of `file_counts` (0005, 0010) and `batch_counts` (0009)
found the rows an UPDATE moved by joining its old and new transition tables on
`id`. PL/pgSQL plans a query without parameters once per connection and keeps
that plan, made for the transition tables' sizes at the first UPDATE the
connection ran: a pooled connection whose first UPDATE touched one row planned a
nested loop, and kept it for the UPDATE that later touched 20,000 (the copies of
one image, given its `image_id`): 400 million comparisons, minutes of a worker
holding its batch, quadratic in the rows.

Now no join: every old row adds -1 (and minus its latency) to its key, every
new row +1 (and its latency), summed by key; a row the UPDATE left in the same
key cancels itself out, and a key whose sum is nought adds nothing, as before.
The latencies are summed as `numeric`, so a row's own two terms cancel exactly
(a float sum would leave rounding dust on keys nothing moved). Whatever plan a
connection keeps, each transition table is read once and grouped: linear in the
rows an UPDATE touches. SQLite (row triggers) is unchanged.

Revision ID: 0012_counts_without_join
Revises: 0011_batch_holder
Create Date: 2026-11-28 21:30:00
"""

# Every statement here is built from constants of this file and of 0005, 0009 and
# 0010: no input.
# ruff: noqa: S608

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

revision = "0012_counts_without_join"
down_revision = "0011_batch_holder"
branch_labels = None
depends_on = None


def _migration(name: str) -> ModuleType:
    """An earlier migration's module: its keys, expressions and functions."""
    path = Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"reka_ingest_migration_{name}", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _function(
    name: str, key: str, deltas: tuple[str, ...], add: str, *, inserted: str, deleted: str
) -> str:
    """A statement trigger function adding, key by key in key order, the summed
    `deltas` of the rows a statement inserted, deleted, or left old and new
    (`inserted`, `deleted`: a select of the transition table `{r}` giving the key's
    columns and the deltas; `add`: the call adding one key's sums, in `moved`)."""
    updated = (
        f"{deleted.replace('{r}', 'old_rows')} UNION ALL {inserted.replace('{r}', 'new_rows')}"
    )

    sums = ", ".join(f"sum({d}) AS {d}" for d in deltas)
    nonzero = " OR ".join(f"sum({d}) <> 0" for d in deltas)

    def each(rows: str) -> str:
        return (
            f"FOR moved IN SELECT {key}, {sums} FROM ({rows}) AS x GROUP BY {key} "
            f"HAVING {nonzero} ORDER BY {key} LOOP PERFORM {add}; END LOOP;"
        )

    return f"""
CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    moved record;
BEGIN
    IF TG_OP = 'INSERT' THEN
        {each(inserted.replace("{r}", "new_rows"))}
    ELSIF TG_OP = 'DELETE' THEN
        {each(deleted.replace("{r}", "old_rows"))}
    ELSE
        {each(updated)}
    END IF;
    RETURN NULL;
END
$$
"""


def _file_counts_function() -> str:
    m = _migration("0005_file_counts")
    latency = f"({m._latency('r')})::numeric"
    return _function(
        "file_counts_apply",
        "state, origin, reason, bucket",
        ("d", "l"),
        "file_counts_add(moved.state, moved.origin, moved.reason, moved.bucket, moved.d, "
        "moved.l::double precision)",
        inserted=f"SELECT {m._key('r')}, 1 AS d, {latency} AS l FROM {{r}} AS r",
        deleted=f"SELECT {m._key('r')}, -1 AS d, -{latency} AS l FROM {{r}} AS r",
    )


def _batch_counts_function() -> str:
    return _function(
        "batch_counts_apply",
        "state",
        ("d",),
        "batch_counts_add(moved.state, moved.d)",
        inserted="SELECT r.state AS state, 1 AS d FROM {r} AS r",
        deleted="SELECT r.state AS state, -1 AS d FROM {r} AS r",
    )


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    op.execute(_file_counts_function())
    op.execute(_batch_counts_function())


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    op.execute(
        _migration("0010_file_counts_no_wait")._apply_function(_migration("0005_file_counts"))
    )
    op.execute(
        _migration("0009_batch_counts")._PG_FUNCTION.replace(
            "CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1
        )
    )

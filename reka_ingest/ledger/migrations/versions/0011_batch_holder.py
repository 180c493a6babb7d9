"""the process that holds a batch: `batches.claimed_by`

Each claim writes which process made it (`reka_ingest.core.holder`): boot id,
PID namespace, pid and start time. A claim that finds a batch still leased by a
process of this machine that no longer runs takes it at once, as if its lease
had run out (its files flagged `possible_duplicate`), instead of waiting out
INGEST_BATCH_LEASE. Batches claimed before this revision have none: the lease
decides for them, as before.

Revision ID: 0011_batch_holder
Revises: 0010_file_counts_no_wait
Create Date: 2026-11-28 20:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_batch_holder"
down_revision = "0010_file_counts_no_wait"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("batches", sa.Column("claimed_by", sa.String(160), nullable=True))


def downgrade() -> None:
    op.drop_column("batches", "claimed_by")

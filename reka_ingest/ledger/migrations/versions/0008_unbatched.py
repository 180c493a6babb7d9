"""queued rows without a batch: `ix_files_unbatched`

A queued row gets its batch from the process that recorded it (the watcher's
batcher, a worker queueing a row again). Should that process lose track of it
(a connection cut at COMMIT, a crash between two writes), the beat sweep gives
it one (reka_ingest.ledger.reconcile.batch_stranded). A partial index of those
rows, by their last write (when they became so), keeps that look a probe: the
rows it holds are the few being batched at any moment.

Revision ID: 0008_unbatched
Revises: 0007_batch_claim
Create Date: 2026-11-28 07:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_unbatched"
down_revision = "0007_batch_claim"
branch_labels = None
depends_on = None

# As reka_ingest.ledger.schema.UNBATCHED_ONLY, frozen here.
UNBATCHED_ONLY = "state = 'queued' AND batch_id IS NULL"


def upgrade() -> None:
    op.create_index(
        "ix_files_unbatched",
        "files",
        ["updated_at"],
        unique=False,
        postgresql_where=sa.text(UNBATCHED_ONLY),
        sqlite_where=sa.text(UNBATCHED_ONLY),
    )


def downgrade() -> None:
    op.drop_index("ix_files_unbatched", table_name="files")

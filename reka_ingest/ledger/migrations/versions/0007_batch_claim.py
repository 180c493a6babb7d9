"""batch claims numbered: `batches.claim_seq`

Every claim of a batch for upload takes the next number (never given back, unlike
`attempts`, which a deferral refunds), and every write a run makes while it
holds the batch names its number: a run whose lease ran out while it waited
(for a request slot, say) and whose batch another run claimed since finds the
number changed and stops before it sends or writes anything
(reka_ingest.ledger.uploads, `LeaseLost`).

Revision ID: 0007_batch_claim
Revises: 0006_failed_path
Create Date: 2026-11-28 02:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_batch_claim"
down_revision = "0006_failed_path"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "batches",
        sa.Column("claim_seq", sa.Integer(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_column("batches", "claim_seq")

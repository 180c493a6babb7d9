"""values and indexes: byte counts as BIGINT, image ids as text, the indexes the
sweeps, the scrape and `status` read by

- `files.size` and `batches.total_bytes` were INTEGER (int4 on PostgreSQL): a
  file of 2 GiB or more could not be recorded, nor a batch that held one.
- `files.image_id` was VARCHAR(128): an id is sent back to poll, so it is kept
  whole as text (the ledger's type bounds it far above any real id).
- `files.duplicate_of` (record_uploaded and fail_files look copies up by it),
  (state, seen_at) (the first file seen in each state: `status`, the oldest
  active file), `files.origin` (files found by origin, for metrics, read from
  the index alone), and (state, indexed_at, seen_at) for the drop-to-indexed
  histogram, read from the index alone.

Text columns need no change in the database: the ledger's column types
(reka_ingest.ledger.columns) make every value storable before it is sent.

Revision ID: 0002_values_and_indexes
Revises: 0001
Create Date: 2026-11-27 18:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_values_and_indexes"
down_revision = "0001"
branch_labels = None
depends_on = None


def _types_change() -> bool:
    """Whether the column types need changing: not on SQLite, whose integers are 64-bit
    whatever the declared type and whose VARCHAR has no length. (There the batch
    mode would copy each table and drop the old one, which the references to it,
    files.batch_id and files.duplicate_of, refuse while foreign keys are enforced.)"""
    return op.get_bind().dialect.name != "sqlite"


def upgrade() -> None:
    if _types_change():
        with op.batch_alter_table("batches", schema=None) as batch_op:
            batch_op.alter_column(
                "total_bytes",
                existing_type=sa.Integer(),
                type_=sa.BigInteger(),
                existing_nullable=False,
            )

    with op.batch_alter_table("files", schema=None) as batch_op:
        if _types_change():
            batch_op.alter_column(
                "size", existing_type=sa.Integer(), type_=sa.BigInteger(), existing_nullable=False
            )
            batch_op.alter_column(
                "image_id",
                existing_type=sa.String(length=128),
                type_=sa.Text(),
                existing_nullable=True,
            )
        batch_op.create_index(batch_op.f("ix_files_duplicate_of"), ["duplicate_of"], unique=False)
        batch_op.create_index(batch_op.f("ix_files_origin"), ["origin"], unique=False)
        batch_op.create_index("ix_files_state_seen_at", ["state", "seen_at"], unique=False)
        batch_op.create_index(
            "ix_files_state_indexed_at_seen_at", ["state", "indexed_at", "seen_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.drop_index("ix_files_state_indexed_at_seen_at")
        batch_op.drop_index("ix_files_state_seen_at")
        batch_op.drop_index(batch_op.f("ix_files_origin"))
        batch_op.drop_index(batch_op.f("ix_files_duplicate_of"))
        if _types_change():
            batch_op.alter_column(
                "image_id",
                existing_type=sa.Text(),
                type_=sa.String(length=128),
                existing_nullable=True,
            )
            batch_op.alter_column(
                "size", existing_type=sa.BigInteger(), type_=sa.Integer(), existing_nullable=False
            )

    if _types_change():
        with op.batch_alter_table("batches", schema=None) as batch_op:
            batch_op.alter_column(
                "total_bytes",
                existing_type=sa.BigInteger(),
                type_=sa.Integer(),
                existing_nullable=False,
            )

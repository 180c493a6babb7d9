"""superseded rows: `files.superseded_by`

A failed file dropped again (the same path in the same source root) supersedes
its failed row (reka_ingest.ledger.intake): the row's state becomes
`superseded` and `superseded_by` names the row that took its place; it stays in
history and leaves the failed count. Indexed: which rows a file replaced is
looked up by it. No foreign key: SQLite would copy the whole table to add one.

Revision ID: 0004_superseded_by
Revises: 0003_conversion
Create Date: 2026-12-04 20:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_superseded_by"
down_revision = "0003_conversion"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.add_column(sa.Column("superseded_by", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_files_superseded_by"), ["superseded_by"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_files_superseded_by"))
        batch_op.drop_column("superseded_by")

"""failed rows by path: `ix_files_failed_path`

A file dropped again supersedes the settled failed rows of its path
(reka_ingest.ledger.intake). That lookup read every failed row for each group
of new files (through the state index), which grew with the ledger. A partial
index of failed rows by path makes it a probe per path: a btree on SQLite, a
hash index on PostgreSQL (a path may be longer than a btree entry may be).

Revision ID: 0006_failed_path
Revises: 0005_file_counts
Create Date: 2026-11-28 01:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_failed_path"
down_revision = "0005_file_counts"
branch_labels = None
depends_on = None

FAILED_ONLY = "state = 'failed'"  # as reka_ingest.ledger.schema.FAILED_ONLY, frozen here


def upgrade() -> None:
    op.create_index(
        "ix_files_failed_path",
        "files",
        ["path"],
        unique=False,
        postgresql_using="hash",
        postgresql_where=sa.text(FAILED_ONLY),
        sqlite_where=sa.text(FAILED_ONLY),
    )


def downgrade() -> None:
    op.drop_index("ix_files_failed_path", table_name="files")

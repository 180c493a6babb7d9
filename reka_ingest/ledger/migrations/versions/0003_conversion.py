"""conversion: how the bytes an upload sent were made from the file's own

`files.conversion` (nullable text, e.g. `HEIF -> JPEG (quality 90)`) is written
with the upload's answer when the file was converted before it was sent
(HEIC/HEIF and AVIF, which the API does not take); NULL for a file sent as it
is. sha256 and size stay those of the original bytes.

A plain ADD/DROP COLUMN on both databases: SQLite (3.35 and later) drops a
column in place, so no table is copied (the batch mode's copy would be refused
by the references to `files` while foreign keys are enforced, see 0002).

Revision ID: 0003_conversion
Revises: 0002_values_and_indexes
Create Date: 2026-12-04 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_conversion"
down_revision = "0002_values_and_indexes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("files", sa.Column("conversion", sa.String(length=64), nullable=True))


def downgrade() -> None:
    op.drop_column("files", "conversion")

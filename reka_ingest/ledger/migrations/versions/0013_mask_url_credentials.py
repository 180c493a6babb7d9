"""URL rows written before credentials were masked: their passwords written `***`

A line of an image URL list with `user:password@` failed `bad_url`, but its row
kept the line as written: the password was in `files.path` (and so in `files
--json`, `retry`'s output and the web page). URL intake now masks it at the
parse (`reka_ingest.files.manifests.mask_credentials`); this masks what earlier
versions stored in the path of every URL row (its line as written; a message
never quoted the userinfo), a chunk of rows at a time. The masking is idempotent
(a masked URL is left as it is), so running it over rows written since changes
nothing. There is no downgrade: a password
once masked is not kept anywhere to put back.

Revision ID: 0013_mask_url_credentials
Revises: 0012_counts_without_join
Create Date: 2026-11-28 22:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from reka_ingest.files.manifests import mask_credentials

revision = "0013_mask_url_credentials"
down_revision = "0012_counts_without_join"
branch_labels = None
depends_on = None

CHUNK = 1000
_FILES = sa.table("files", sa.column("id", sa.Integer), sa.column("path"), sa.column("origin"))


def upgrade() -> None:
    conn = op.get_bind()
    last = 0
    while True:
        rows = conn.execute(
            sa.select(_FILES.c.id, _FILES.c.path)
            .where(_FILES.c.origin == "url", _FILES.c.id > last)
            .order_by(_FILES.c.id)
            .limit(CHUNK)
        ).all()
        if not rows:
            return
        last = rows[-1].id
        for row in rows:
            path = mask_credentials(row.path)
            if path != row.path:
                conn.execute(sa.update(_FILES).where(_FILES.c.id == row.id).values(path=path))


def downgrade() -> None:
    """Nothing to undo: the masked text stays masked."""

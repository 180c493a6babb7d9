"""Migration 0013: URL rows an earlier version stored with `user:password@` in their
path hold it masked once the ledger is migrated; every other row is left as it was."""

from __future__ import annotations

from typing import cast

from alembic import command
from sqlalchemy import Table, insert, select

from reka_ingest.core.states import FileState, Origin
from reka_ingest.ledger import Ledger
from reka_ingest.ledger.db import _alembic_config
from reka_ingest.ledger.schema import File
from tests.support.new_files import file_row

FILES = cast(Table, File.__table__)
PASSWORD = "s3cret-pw"  # noqa: S105 - a test value the ledger must not keep

# (origin, path as an earlier version stored it, path after the migration)
ROWS = [
    (
        Origin.URL,
        f"https://ann:{PASSWORD}@photos.example/a.jpg",
        "https://ann:***@photos.example/a.jpg",
    ),
    (Origin.URL, f"http://{PASSWORD}@h.example/b.jpg", "http://***@h.example/b.jpg"),
    (Origin.URL, f"https://bob:pa/{PASSWORD}@h.example/c.jpg", "https://bob:***@h.example/c.jpg"),
    (Origin.URL, "https://h.example:8443/d@2x.jpg", "https://h.example:8443/d@2x.jpg"),
    (Origin.URL, "https://ann:***@photos.example/e.jpg", "https://ann:***@photos.example/e.jpg"),
    (Origin.EVENT, f"mail/ann:{PASSWORD}@home.jpg", f"mail/ann:{PASSWORD}@home.jpg"),
]


def test_url_rows_stored_with_a_password_hold_it_masked_after_the_migration(
    database_url: str,
) -> None:
    ledger = Ledger(database_url)
    try:
        with ledger.engine.begin() as conn:
            cfg = _alembic_config(ledger.url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0012_counts_without_join")  # an empty database
            command.downgrade(cfg, "0012_counts_without_join")  # one made at head
        with ledger.engine.begin() as conn:
            conn.execute(
                insert(FILES),
                [
                    file_row(i, origin=origin, path=path, state=FileState.FAILED)
                    for i, (origin, path, _) in enumerate(ROWS)
                ],
            )
        ledger.migrate()
        with ledger.read() as s:
            paths = list(s.scalars(select(File.path).order_by(File.id)))
        assert paths == [after for _, _, after in ROWS]
        assert not any(PASSWORD in p for p in paths[:-1])
    finally:
        ledger.dispose()

"""Every SQLite connection of the ledger's is tuned as it opens: WAL, its busy timeout,
foreign keys, and statement journals in memory (a temporary file cost every row a
count trigger writes some thirty pwrite(2)s)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from reka_ingest.core.constants import SQLITE_BUSY_TIMEOUT_MS
from reka_ingest.ledger import open_ledger


def test_each_connection_has_the_ledgers_settings(tmp_path: Path) -> None:
    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        for _ in range(2):  # a reader and a writer: each connection its own
            with ledger.write() as s:
                got = {
                    name: s.execute(text(f"PRAGMA {name}")).scalar_one()
                    for name in (
                        "journal_mode",
                        "busy_timeout",
                        "synchronous",
                        "foreign_keys",
                        "temp_store",
                    )
                }
            assert got == {
                "journal_mode": "wal",
                "busy_timeout": SQLITE_BUSY_TIMEOUT_MS,
                "synchronous": 1,  # NORMAL
                "foreign_keys": 1,
                "temp_store": 2,  # MEMORY
            }
    finally:
        ledger.dispose()

"""A ledger already at the newest migration is opened without alembic: the
revision in the code is the migrations folder's head, and a process that opens
such a ledger never imports alembic (which every command and worker would pay
for at start)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from alembic import command

from reka_ingest.ledger.db import HEAD_REVISION, Ledger, _alembic_config, open_ledger


def test_the_head_revision_in_the_code_is_the_migrations_head() -> None:
    assert Ledger.head_revision() == HEAD_REVISION


def test_a_ledger_at_head_opens_without_importing_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    open_ledger(url).dispose()  # a new ledger: migrated by alembic, here
    probe = (
        "import sys\n"
        "from reka_ingest.ledger.db import open_ledger\n"
        f"open_ledger({url!r}).dispose()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_a_ledger_behind_head_is_still_migrated(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = open_ledger(url)
    with ledger.engine.begin() as conn:  # as if made by an older release
        cfg = _alembic_config(url)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0005_file_counts")
    ledger.dispose()
    ledger = open_ledger(url)
    try:
        assert ledger.current_revision() == HEAD_REVISION
        with ledger.engine.connect() as conn:
            names = {r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master")}
            batch_columns = {r[1] for r in conn.exec_driver_sql("PRAGMA table_info(batches)")}
        assert "ix_files_failed_path" in names
        assert "claim_seq" in batch_columns
    finally:
        ledger.dispose()

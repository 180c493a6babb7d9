"""Migration 0002 on a populated ledger, SQLite and PostgreSQL: a ledger made at
revision 0001 (as a user's is) keeps every row, takes a file of more than
2 GiB afterwards, and ends with exactly the schema the ORM declares."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import DataError

from reka_ingest.ledger.db import Ledger, _alembic_config
from reka_ingest.ledger.schema import Base
from tests.conftest import DATABASES
from tests.support.postgres import PostgresCluster

FIRST = "0001"
GIB = 1024**3

_BATCHES = """
INSERT INTO batches (id, state, file_count, total_bytes, attempts, parent_id, created_at,
                     request_id, last_error)
VALUES (1, 'split', 2, 30, 1, NULL, 1.0, 'req-1', '413'),
       (2, 'done', 2, 30, 1, 1, 2.0, 'req-2', NULL)
"""
_FILES = """
INSERT INTO files (id, path, source_root, work_path, final_path, origin, size, mtime, sha256,
                   sidecar, index_flag, state, reason, message, attempts, batch_id,
                   duplicate_of, possible_duplicate, image_id, polls, seen_at, indexed_at,
                   updated_at)
VALUES (1, 'a.jpg', '/in', '/work/a.jpg', '/done/a.jpg', 'event', 2000000000, 1.0,
        'aa', '{"t": "x"}', true, 'indexed', NULL, NULL, 1, 2, NULL, false, 'img-1', 1,
        10.0, 20.0, 20.0),
       (2, 'b.jpg', '/in', '/work/b.jpg', NULL, 'scan', 15, 1.0, 'aa', NULL, true,
        'duplicate', 'duplicate_content', 'same bytes as file 1', 0, 2, 1, false, 'img-1',
        0, 11.0, NULL, 11.0)
"""
_SET_SIZE = text("UPDATE files SET size = :size WHERE id = 2")
_SNAPSHOT = (
    "SELECT id, path, work_path, final_path, origin, size, sha256, state, reason, message,"
    " batch_id, duplicate_of, image_id, seen_at, indexed_at FROM files ORDER BY id"
)


@pytest.fixture(params=DATABASES)
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no ledger in it yet."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    url = cluster.empty_database()
    yield url
    cluster.drop(url)


def _upgrade(ledger: Ledger, revision: str) -> None:
    with ledger.engine.begin() as conn:
        cfg = _alembic_config(ledger.url)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def test_a_populated_0001_ledger_upgrades_keeping_its_rows(empty_url: str) -> None:
    ledger = Ledger(empty_url)
    try:
        _upgrade(ledger, FIRST)
        assert ledger.current_revision() == FIRST
        with ledger.engine.begin() as conn:
            conn.execute(text(_BATCHES))
            conn.execute(text(_FILES))
        if not ledger.is_sqlite:  # the bug: int4 refuses a file of 2 GiB or more
            with pytest.raises(DataError), ledger.engine.begin() as conn:
                conn.execute(_SET_SIZE, {"size": 3 * GIB})
        with ledger.engine.connect() as conn:
            before = conn.execute(text(_SNAPSHOT)).all()

        ledger.migrate()

        assert ledger.current_revision() == ledger.head_revision() != FIRST
        with ledger.engine.begin() as conn:
            assert conn.execute(text(_SNAPSHOT)).all() == before
            conn.execute(_SET_SIZE, {"size": 3 * GIB})
            conn.execute(
                text("UPDATE batches SET total_bytes = :n WHERE id = 2"), {"n": 3 * GIB + 15}
            )
            conn.execute(text("UPDATE files SET image_id = :i WHERE id = 1"), {"i": "i" * 300})
        with ledger.engine.connect() as conn:
            assert conn.execute(text("SELECT size FROM files WHERE id = 2")).scalar() == 3 * GIB
            assert conn.execute(text("SELECT total_bytes FROM batches WHERE id = 2")).scalar() == (
                3 * GIB + 15
            )
            indexes = {ix["name"] for ix in inspect(conn).get_indexes("files")}
            assert {
                "ix_files_duplicate_of",
                "ix_files_origin",
                "ix_files_state_seen_at",
                "ix_files_state_indexed_at_seen_at",
            } <= indexes
            diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        if ledger.is_sqlite:
            # SQLite keeps the 0001 declared types (its integers are 64-bit, its
            # VARCHAR unbounded): only the types may differ there.
            diffs = [d for d in diffs if not (isinstance(d, list) and d[0][0] == "modify_type")]
        assert diffs == [], "the migrations and the ORM's schema disagree"
    finally:
        ledger.dispose()


def test_a_fresh_ledger_reaches_head_and_back_down_to_0001(empty_url: str) -> None:
    ledger = Ledger(empty_url)
    try:
        ledger.migrate()
        with ledger.engine.begin() as conn:
            cfg = _alembic_config(ledger.url)
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, FIRST)
        assert ledger.current_revision() == FIRST
        ledger.migrate()
        assert ledger.current_revision() == ledger.head_revision()
    finally:
        ledger.dispose()

"""A write that meets a concurrent one in a PostgreSQL ledger (a deadlock, a lock
not granted in time) is retried like an outage, but said as what it is: the
ledger answers, it was busy. Real PostgreSQL: a real deadlock between two
connections, and a real lock held by another connection past the database's
`lock_timeout` while the real recorder records a group.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import OperationalError
from structlog.testing import capture_logs

from reka_ingest.core.errors import LedgerUnavailable
from reka_ingest.core.settings import IngestSettings
from reka_ingest.core.states import FileState, Origin
from reka_ingest.ledger import Ledger, open_ledger
from reka_ingest.ledger.intake import NewFile
from reka_ingest.ledger.schema import File
from scheduler.batcher import ledger_batchers
from scheduler.recorder import Recorder
from tests.support.postgres import PostgresCluster

CONCURRENT = "a write met a concurrent one in the ledger"


@pytest.fixture
def pg_url(postgres: PostgresCluster) -> Iterator[str]:
    url = postgres.fresh_database()
    yield url
    postgres.drop(url)


def test_a_deadlock_is_a_conflict_retried_like_an_outage(pg_url: str) -> None:
    """Two transactions update two rows in opposite orders: PostgreSQL ends one."""
    engine = create_engine(pg_url)
    with engine.begin() as c:
        c.execute(text("CREATE TABLE pair (id int PRIMARY KEY, n int)"))
        c.execute(text("INSERT INTO pair VALUES (1, 0), (2, 0)"))
    first, second = engine.connect(), engine.connect()
    errors: list[BaseException] = []
    both_hold = threading.Barrier(2)

    def cross(conn: Connection, mine: int, theirs: int) -> None:
        try:
            conn.execute(text("UPDATE pair SET n = n + 1 WHERE id = :i"), {"i": mine})
            both_hold.wait(10)
            conn.execute(text("UPDATE pair SET n = n + 1 WHERE id = :i"), {"i": theirs})
            conn.commit()
        except OperationalError as err:
            errors.append(err)
            conn.rollback()

    threads = [
        threading.Thread(target=cross, args=(first, 1, 2)),
        threading.Thread(target=cross, args=(second, 2, 1)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    first.close()
    second.close()
    engine.dispose()
    assert len(errors) == 1, errors
    err = errors[0]
    assert "deadlock detected" in str(err)
    assert Ledger.is_outage(err) and Ledger.is_conflict(err)
    assert Ledger.why_waiting(err).startswith(CONCURRENT)
    wrapped = LedgerUnavailable("waits")
    wrapped.__cause__ = err
    assert Ledger.is_conflict(wrapped)  # as the recorder and batchers raise it


def test_an_outage_is_not_a_conflict(tmp_path: Path) -> None:
    gone = create_engine(f"sqlite:///{tmp_path / 'no' / 'such' / 'ledger.db'}")
    with pytest.raises(OperationalError) as info, gone.connect():
        pass
    assert Ledger.is_outage(info.value) and not Ledger.is_conflict(info.value)
    assert Ledger.why_waiting(info.value) == "the ledger does not answer"


def _new(settings: IngestSettings, i: int) -> NewFile:
    return NewFile(
        path=f"c{i}.jpg",
        source_root=str(settings.inbox),
        work_path=str(settings.inbox / f"c{i}.jpg"),
        origin=Origin.SCAN,
        size=100 + i,
        mtime=1.0,
        sha256=f"{i:064x}",
        seen_at=1.0,
    )


def test_a_group_that_meets_a_held_lock_waits_and_says_so(
    pg_url: str, fast_settings: Callable[..., IngestSettings]
) -> None:
    """Another connection holds `files` locked past the database's lock_timeout: the
    group is not recorded, nothing is blamed on a file, the log and the error say a
    concurrent write (not an outage); once the lock goes, every file is recorded."""
    name = make_url(pg_url).database
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f"ALTER DATABASE \"{name}\" SET lock_timeout = '300ms'"))
    ledger = open_ledger(pg_url)  # its connections are made after: they take the setting
    settings = fast_settings(batch_max_files=50)
    batcher, url_batcher = ledger_batchers(settings, ledger, lambda _id: None, lambda: 1.0)
    recorder = Recorder(settings, ledger, batcher, url_batcher=url_batcher, group_size=50)
    holder = admin.connect().execution_options(isolation_level="READ COMMITTED")
    try:
        holder.begin()
        holder.execute(text("LOCK TABLE files IN ACCESS EXCLUSIVE MODE"))
        for i in range(5):
            assert recorder.add(_new(settings, i)) is None
        with capture_logs() as logs, pytest.raises(LedgerUnavailable) as info:
            recorder.flush()
        assert str(info.value).startswith(CONCURRENT), info.value
        assert Ledger.is_conflict(info.value)  # raised from the driver's error: the watcher logs
        # `watcher.ledger_conflict`, not `watcher.ledger_unavailable`
        events = [e["event"] for e in logs]
        assert "recorder.ledger_conflict" in events, logs
        assert "recorder.ledger_unavailable" not in events, logs
        assert len(recorder) == 5 and recorder.totals.isolated == 0  # all wait, none blamed
    finally:
        holder.rollback()
        holder.close()
    recorder.flush()
    batcher.flush()
    with ledger.read() as s:
        rows = list(s.scalars(select(File)))
    assert sorted(r.path for r in rows) == [f"c{i}.jpg" for i in range(5)]
    assert {r.state for r in rows} == {FileState.QUEUED}
    ledger.dispose()
    admin.dispose()

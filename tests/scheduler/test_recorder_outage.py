"""An outage while a recorded group is followed up: final paths, batch creation.

Real parts only: the real recorder and batchers on a real ledger (SQLite and
PostgreSQL), and a real outage begun the moment a group's rows are committed
(PostgreSQL stopped; on SQLite another connection holding the write lock past
a short busy timeout), so the steps after the recording meet it: the final
paths of files moved to done/ or failed/, and the creation of batches. They
must say `LedgerUnavailable` (never the driver's error), blame no file, lose
no row: once the ledger answers, every queued row ends in exactly one batch,
sent once, and every final path is written.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from reka_ingest.core.errors import LedgerUnavailable
from reka_ingest.core.settings import IngestSettings
from reka_ingest.core.states import FileState, Origin, Reason
from reka_ingest.ledger import Ledger, db, open_ledger
from reka_ingest.ledger.intake import NewFile, create_batches, record_files
from reka_ingest.ledger.schema import Batch, File
from scheduler.batcher import Batcher, BatchLimits, ledger_batch_groups, ledger_batchers
from scheduler.recorder import Recorder
from scheduler.watcher import Watcher
from tests.scheduler.conftest import wait_for
from tests.support.images import write_image
from tests.support.postgres import PostgresCluster


class Outage:
    """The test's ledger database stops answering when the next group of new rows
    has committed (`arm`), until `end`; `begun` says whether it has.

    `arm(answer_lost=True)`: the connection is cut at that COMMIT, after the
    database committed and before its answer came back. The caller sees its
    commit fail, as the driver says it then (OperationalError), and cannot tell
    that its rows are in."""

    def __init__(self, request: pytest.FixtureRequest, url: str, ledger: Ledger) -> None:
        self.request, self.url, self.ledger = request, url, ledger
        self.begun = False
        self._armed = False
        self._answer_lost = False
        self._inserted = False
        self._holder: sqlite3.Connection | None = None
        self._cluster: PostgresCluster | None = None

    def arm(self, *, answer_lost: bool = False) -> None:
        self._answer_lost = answer_lost
        if not self.ledger.is_sqlite:
            self._cluster = self.request.getfixturevalue("postgres")
        event.listen(self.ledger.engine, "before_cursor_execute", self._on_execute)
        event.listen(Session, "after_commit", self._on_commit)
        self._armed = True

    def _on_execute(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self._inserted = self._inserted or statement.lstrip().startswith("INSERT INTO files")

    def _on_commit(self, _session: Session) -> None:
        if self._armed and self._inserted and not self.begun:
            self._begin()
            if self._answer_lost:
                cut = ConnectionError("server closed the connection unexpectedly")
                raise OperationalError("COMMIT", None, cut)

    def _begin(self) -> None:
        self.begun = True
        if self._cluster is not None:
            self._cluster.stop()
            return
        path = self.url.removeprefix("sqlite:///")
        self._holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._holder.execute("BEGIN IMMEDIATE")  # another process holding the write lock

    def end(self) -> None:
        if self._armed:
            event.remove(self.ledger.engine, "before_cursor_execute", self._on_execute)
            event.remove(Session, "after_commit", self._on_commit)
            self._armed = False
        if not self.begun:
            return
        self.begun = False
        if self._holder is not None:
            self._holder.execute("ROLLBACK")
            self._holder.close()
            self._holder = None
        if self._cluster is not None:
            self._cluster.start()


@pytest.fixture
def short_busy_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite waits 0.2 s for a lock, not 30: a locked ledger is an outage quickly."""
    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 200)


@pytest.fixture
def outage_ledger(database_url: str, short_busy_wait: None) -> Iterator[Ledger]:
    led = open_ledger(database_url)
    yield led
    led.dispose()


@pytest.fixture
def outage(
    request: pytest.FixtureRequest, database_url: str, outage_ledger: Ledger
) -> Iterator[Outage]:
    o = Outage(request, database_url, outage_ledger)
    yield o
    o.end()


def _new(settings: IngestSettings, i: int, *, sha: int | None = None, bad: bool = False) -> NewFile:
    return NewFile(
        path=f"f{i}.jpg",
        source_root=str(settings.inbox),
        work_path=str(settings.inbox / f"f{i}.jpg"),  # recorded in place: never moved
        origin=Origin.SCAN,
        size=10 + i,
        mtime=1.0,
        sha256=f"{sha if sha is not None else i:064x}",
        seen_at=1.0,
        reason=Reason.EMPTY_FILE if bad else None,
        message="empty" if bad else None,
    )


def _rows(ledger: Ledger) -> list[File]:
    with ledger.read() as s:
        return list(s.scalars(select(File).order_by(File.id)))


def _batches(ledger: Ledger) -> dict[int, int]:
    """Batch id -> its file count, as the ledger says."""
    with ledger.read() as s:
        return {b.id: b.file_count for b in s.scalars(select(Batch))}


def _assert_each_queued_row_in_one_sent_batch(ledger: Ledger, sent: list[int]) -> None:
    rows = [r for r in _rows(ledger) if r.state == FileState.QUEUED]
    assert rows and all(r.batch_id is not None for r in rows), [r.id for r in rows]
    assert len(sent) == len(set(sent)), sent  # each batch sent once
    batches = _batches(ledger)
    assert set(batches) == set(sent)  # no batch left unsent, none made twice or empty
    assert all(n > 0 for n in batches.values()), batches
    assert sum(batches.values()) == len(rows)


def _recording(
    fast_settings: Callable[..., IngestSettings], ledger: Ledger
) -> tuple[IngestSettings, list[int], Recorder, Batcher, Batcher]:
    """Batches of 3 closed by size only, and a recorder whose groups are 50 from the
    first (each flush records one group); the batch ids sent are appended to `sent`."""
    settings = fast_settings(batch_max_files=3, batch_max_wait=60.0)
    sent: list[int] = []
    batcher, url_batcher = ledger_batchers(settings, ledger, sent.append, time.time)
    big = fast_settings(batch_max_files=50)
    recorder = Recorder(big, ledger, batcher, url_batcher=url_batcher, group_size=50)
    return settings, sent, recorder, batcher, url_batcher


@pytest.mark.timeout(120)
@pytest.mark.parametrize("with_moves", [True, False], ids=["final_paths", "batches"])
def test_an_outage_after_a_group_is_recorded_loses_nothing(
    fast_settings: Callable[..., IngestSettings],
    outage_ledger: Ledger,
    outage: Outage,
    with_moves: bool,
) -> None:
    """The outage begins when the group's rows commit: with duplicates and a failed
    file, writing their final paths meets it first; without, creating the batches."""
    ledger = outage_ledger
    settings, sent, recorder, batcher, url_batcher = _recording(fast_settings, ledger)
    group = [_new(settings, i) for i in range(7)]
    if with_moves:
        group += [_new(settings, 7, sha=1), _new(settings, 8, sha=2), _new(settings, 9, bad=True)]
    for new in group:
        assert recorder.add(new) is None
    recorder.flush()
    batcher.flush()
    earlier = set(sent)
    sent.clear()
    more = [_new(settings, 100 + i) for i in range(7)]
    if with_moves:  # a duplicate of a file in its own group, and a failed file
        more += [_new(settings, 200, sha=100), _new(settings, 201, bad=True)]
    for new in more:
        assert recorder.add(new) is None
    outage.arm()
    with pytest.raises(LedgerUnavailable):
        recorder.flush()
    assert outage.begun
    assert recorder.totals.isolated == 0 and len(recorder) == 0  # recorded: no file waits
    if with_moves:  # the final paths met the outage; the rest waits behind them
        assert recorder.final_paths_waiting == 2 and batcher.pending == 0
        with pytest.raises(LedgerUnavailable):  # still down: still an outage, nothing lost
            recorder.flush()
    else:  # the batches met it: their files are held by the batcher, 2 sealed, 1 open
        assert batcher.pending == 7
        recorder.flush()  # nothing of its own waits
        with pytest.raises(LedgerUnavailable):
            batcher.poll()
    assert not sent
    outage.end()

    recorder.flush()
    batcher.flush()
    url_batcher.flush()
    assert recorder.final_paths_waiting == 0 and batcher.pending == 0
    rows = [r for r in _rows(ledger) if r.batch_id not in earlier and r.id > len(group)]
    assert len(rows) == len(more)
    assert not [r for r in rows if r.state == FileState.FAILED and r.reason != Reason.EMPTY_FILE]
    assert all(r.final_path for r in rows if r.state != FileState.QUEUED)
    assert not set(sent) & earlier
    _assert_each_queued_row_in_one_sent_batch(ledger, sorted(earlier) + sent)


@pytest.mark.timeout(120)
def test_a_group_committed_unanswered_is_batched_and_moved_when_recorded_again(
    fast_settings: Callable[..., IngestSettings],
    outage_ledger: Ledger,
    outage: Outage,
) -> None:
    """The connection is cut at the group's COMMIT: its rows are in, the recorder
    is told the ledger does not answer, and the group waits. Recorded again once
    the ledger answers, it makes no second row, and the rows made unseen go on as
    if the first try had been answered: every queued one in one batch, sent once,
    the duplicate and the failed file moved (their final paths written)."""
    ledger = outage_ledger
    settings, sent, recorder, batcher, _ = _recording(fast_settings, ledger)
    group = [_new(settings, i) for i in range(7)]
    group += [_new(settings, 7, sha=1), _new(settings, 8, bad=True)]
    for new in group:
        assert recorder.add(new) is None
    outage.arm(answer_lost=True)
    with pytest.raises(LedgerUnavailable):
        recorder.flush()
    assert outage.begun
    assert len(recorder) == len(group)  # nothing is known to be recorded: all wait
    outage.end()
    assert len(_rows(ledger)) == len(group)  # and yet the rows are in

    counts = recorder.flush()
    batcher.flush()
    assert (counts.recorded, counts.resumed, counts.skipped) == (0, len(group), 0)
    rows = _rows(ledger)
    assert len(rows) == len(group)  # no second row
    assert sorted(r.state for r in rows) == sorted(
        [FileState.QUEUED] * 7 + [FileState.DUPLICATE, FileState.FAILED]
    )
    assert all(r.final_path for r in rows if r.state != FileState.QUEUED)
    _assert_each_queued_row_in_one_sent_batch(ledger, sent)

    # A third time: nothing is left to do for any of them.
    for new in group:
        recorder.add(new)
    counts = recorder.flush()
    batcher.flush()
    assert (counts.recorded, counts.resumed, counts.skipped) == (0, 0, len(group))
    _assert_each_queued_row_in_one_sent_batch(ledger, sent)


@pytest.mark.timeout(120)
def test_the_watcher_waits_out_an_outage_met_while_a_group_is_batched(
    fast_settings: Callable[..., IngestSettings],
    outage_ledger: Ledger,
    outage: Outage,
    running: Any,
) -> None:
    """Groups fill while paths are looked at (the first group is one batch): the
    outage met while creating its batches is the ledger's, not the path's."""
    ledger = outage_ledger
    settings = fast_settings(batch_max_files=3, batch_max_wait=0.5)
    sent: list[int] = []
    watcher = Watcher(settings, ledger, sent.append)
    names = [f"img{i}.jpg" for i in range(12)]
    with running(watcher):
        outage.arm()
        for i, name in enumerate(names):
            write_image(settings.inbox / name, seed=i)
        wait_for(lambda: outage.begun)
        wait_for(lambda: watcher._failures >= 2)  # ticks wait for the ledger, and retry
        time.sleep(1.0)
        outage.end()
        wait_for(lambda: _all_sent(ledger, sent, len(names)), timeout=40)
    assert watcher.stats.isolated == 0
    rows = _rows(ledger)
    assert sorted(r.path for r in rows) == sorted(names)
    assert all(r.state == FileState.QUEUED for r in rows)
    _assert_each_queued_row_in_one_sent_batch(ledger, sent)


def _all_sent(ledger: Ledger, sent: list[int], n: int) -> bool:
    rows = _rows(ledger)
    return len(rows) == n and all(r.batch_id in sent for r in rows)


def test_creating_batches_again_for_rows_already_batched_makes_no_second_batch(
    ledger: Ledger, tmp_path: Path
) -> None:
    """A create whose commit happened although its caller saw it fail is made again:
    the rows are in one batch still, and the batch they are in is given back."""
    files = [
        NewFile(f"{i}.jpg", "/in", f"/w/{i}.jpg", Origin.SCAN, 10, 1.0, f"{i:064x}", 1.0)
        for i in range(5)
    ]
    ids = [r.file_id for r in record_files(ledger, files, now=1.0)]
    first = create_batches(ledger, [ids[:3], ids[3:]], now=2.0)
    again = create_batches(ledger, [ids[:3], ids[3:]], now=3.0)
    assert again == first
    assert _batches(ledger) == {first[0]: 3, first[1]: 2}
    # Part of a group taken already: the rest still gets a batch of its own.
    more = [r.file_id for r in record_files(ledger, [_moved(files[0], 9)], now=4.0)]
    [third] = create_batches(ledger, [[ids[0], *more]], now=5.0)
    assert third not in first and _batches(ledger)[third] == 1


def _moved(f: NewFile, i: int) -> NewFile:
    return NewFile(f"{i}.jpg", f.source_root, f"/w/{i}.jpg", f.origin, 10, 1.0, f"{i:064x}", 1.0)


def test_another_error_while_batching_is_logged_and_the_rows_are_batched_later(
    fast_settings: Callable[..., IngestSettings], ledger: Ledger
) -> None:
    """Not an outage, and no file's fault either: the recorder does not raise (a
    caller looking at one path would blame it), the rows stay with the batcher,
    and its next poll creates their batches."""
    settings = fast_settings(batch_max_files=3, batch_max_wait=60.0)
    sent: list[int] = []
    real = ledger_batch_groups(ledger)
    calls = 0

    def create_many(groups: Sequence[Sequence[int]]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug in batch creation")
        return real(groups)

    batcher = Batcher(
        BatchLimits.from_settings(settings),
        create=lambda ids: create_many([ids])[0],
        create_many=create_many,
        enqueue=sent.append,
    )
    recorder = Recorder(settings, ledger, batcher, group_size=50)
    counts = [recorder.add(_new(settings, i)) for i in range(3)][-1]  # a first group of 3
    assert counts is not None and (counts.recorded, counts.queued, counts.isolated) == (3, 3, 0)
    assert batcher.pending == 3 and not sent
    assert len(batcher.poll()) == 1
    _assert_each_queued_row_in_one_sent_batch(ledger, sent)

"""Queued rows left without a batch get one: `reconcile.batch_stranded`, both ledgers.

The process that records a row, or queues it again, makes its batch moments
later. One that loses track of it in between (its COMMIT's answer lost, killed
between the two writes) would leave the row queued and unseen; the beat sweep
batches such rows once they have waited past the grace it is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, select

from reka_ingest.core.states import Origin, Reason
from reka_ingest.ledger import Ledger, open_ledger
from reka_ingest.ledger.intake import NewFile, create_batches, pack, record_files
from reka_ingest.ledger.reconcile import batch_stranded
from reka_ingest.ledger.schema import Batch, File

GRACE = 60.0
LIMITS: dict[str, int] = {"max_files": 3, "max_bytes": 1000, "limit": 100}


def _new(i: int, *, size: int = 100, url: bool = False, bad: bool = False) -> NewFile:
    return NewFile(
        path=f"https://img.test/{i}.jpg" if url else f"{i}.jpg",
        source_root="/in",
        work_path=f"/w/list.urls#L{i}" if url else f"/w/{i}.jpg",
        origin=Origin.URL if url else Origin.EVENT,
        size=0 if url else size,
        mtime=1.0,
        sha256=f"{i:064x}",
        seen_at=1.0,
        reason=Reason.EMPTY_FILE if bad else None,
        message="empty" if bad else None,
    )


def _batches(ledger: Ledger) -> dict[int, list[int]]:
    """Batch id -> its files' ids, as the ledger says."""
    with ledger.read() as s:
        out: dict[int, list[int]] = {b: [] for b in s.scalars(select(Batch.id))}
        for file_id, batch_id in s.execute(select(File.id, File.batch_id).order_by(File.id)):
            if batch_id is not None:
                out[batch_id].append(file_id)
        return out


def test_rows_waiting_past_the_grace_are_batched_by_kind_within_the_limits(
    ledger: Ledger,
) -> None:
    files = [_new(i, size=400 if i == 4 else 100) for i in range(1, 7)]
    files += [_new(i, url=True) for i in range(10, 14)]
    files += [_new(20, bad=True), _new(21, size=5000)]  # failed at intake; larger than a batch
    ids = {r.work_path: r.file_id for r in record_files(ledger, files, now=100.0)}
    batched = [ids["/w/1.jpg"]]
    create_batches(ledger, [batched], now=100.0)  # its batcher made this one
    younger = record_files(ledger, [_new(30)], now=150.0)

    assert batch_stranded(ledger, now=100.0 + GRACE, older_than=GRACE, **LIMITS) == []
    made = batch_stranded(ledger, now=100.5 + GRACE, older_than=GRACE, **LIMITS)

    by_batch = _batches(ledger)
    groups = [by_batch[b] for b in made]
    id_of = {r: ids[f"/w/{r}.jpg"] for r in (2, 3, 4, 5, 6, 21)}
    urls = [ids[f"/w/list.urls#L{i}"] for i in range(10, 14)]
    # In id order: 2, 3, 4 (600 bytes), then 5 and 6 (500 more would pass 1000 with 4),
    # 21 alone (larger than a batch); the URL rows by count alone.
    assert groups == [
        [id_of[2], id_of[3], id_of[4]],
        [id_of[5], id_of[6]],
        [id_of[21]],
        urls[:3],
        urls[3:],
    ]
    everything = {f for g in by_batch.values() for f in g}
    assert younger[0].file_id not in everything  # still within its batcher's wait
    assert ids["/w/20.jpg"] not in everything  # final at intake: no batch
    assert batch_stranded(ledger, now=500.0, older_than=GRACE, **LIMITS) == [
        max(by_batch) + 1
    ]  # only the younger row was left
    assert sum(len(g) for g in _batches(ledger).values()) == 1 + 5 + 1 + 4 + 1


def test_a_batcher_making_the_batch_meanwhile_leaves_no_second_one(ledger: Ledger) -> None:
    """The sweep and a late batcher race: whichever is second gets the first's batch."""
    rows = record_files(ledger, [_new(i) for i in range(3)], now=1.0)
    ids = [r.file_id for r in rows]
    [made] = batch_stranded(ledger, now=100.0, older_than=GRACE, **LIMITS)
    assert create_batches(ledger, [ids], now=101.0) == [made]
    assert _batches(ledger) == {made: ids}
    assert batch_stranded(ledger, now=200.0, older_than=GRACE, **LIMITS) == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=3000), max_size=40),
    max_files=st.integers(min_value=1, max_value=7),
    max_bytes=st.integers(min_value=1, max_value=2000),
)
def test_pack_keeps_order_and_limits(sizes: list[int], max_files: int, max_bytes: int) -> None:
    rows = list(enumerate(sizes))
    groups = pack(rows, max_files=max_files, max_bytes=max_bytes)
    assert [i for g in groups for i in g] == [i for i, _ in rows]  # every row once, in order
    for g in groups:
        assert 1 <= len(g) <= max_files
        assert len(g) == 1 or sum(sizes[i] for i in g) <= max_bytes  # a big row goes alone


def test_sqlite_finds_them_through_the_partial_index(tmp_path: Path) -> None:
    """The sweep's look, as sent, is a probe of `ix_files_unbatched` (SQLite uses a
    partial index only where the query states its condition in the same words)."""
    led = open_ledger(f"sqlite:///{tmp_path / 'plan.db'}")
    sent: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if "FROM files" in statement:
            sent.append((statement, params))

    event.listen(led.engine, "before_cursor_execute", capture)
    try:
        batch_stranded(led, now=100.0, older_than=GRACE, **LIMITS)
        [(statement, params)] = sent
        with led.read() as s:
            plan = s.connection().exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", params).all()
    finally:
        event.remove(led.engine, "before_cursor_execute", capture)
        led.dispose()
    assert any("ix_files_unbatched" in row[-1] for row in plan), plan

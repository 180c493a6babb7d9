"""Several watchers, one ledger, the same bytes in every inbox at once.

The README's layout for many machines: one watcher per inbox, all on one
PostgreSQL ledger. When the same photos land in two inboxes at the same moment,
each watcher decides at intake whether its copy is new bytes or a `duplicate`
of a live row; the decisions must see each other, or both copies are queued
and uploaded. Real watchers (each with its own inbox, work area and ledger
handle, as on separate machines) race N files renamed into every inbox at
once; afterwards every hash has exactly one live original and every other copy
is a `duplicate` of it.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from reka_ingest.core.settings import IngestSettings
from reka_ingest.core.states import NOT_ORIGINALS, FileState
from reka_ingest.ledger import Ledger, intake, open_ledger
from reka_ingest.ledger.queries import list_files
from reka_ingest.ledger.schema import File
from scheduler.watcher import Watcher
from tests.scheduler.conftest import wait_for
from tests.support.images import image_bytes
from tests.support.postgres import PostgresCluster

WATCHERS = 4
N = 250  # distinct images, each renamed into every inbox
ROUNDS = 2  # a second wave of the same images under new names: copies of live rows


def no_enqueue(_batch_id: int) -> None:
    """Batches stay queued: only the intake decision is under test."""


class Ledgers:
    """A separate ledger handle (engine, pool) per watcher, as on separate machines."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.opened: list[Ledger] = []

    def __call__(self) -> Ledger:
        led = open_ledger(self.url)
        self.opened.append(led)
        return led

    def close(self) -> None:
        for led in self.opened:
            led.dispose()


@pytest.fixture
def ledgers(database_url: str) -> Iterator[Ledgers]:
    handles = Ledgers(database_url)
    yield handles
    handles.close()


def stage(root: Path, images: list[bytes], prefix: str) -> list[Path]:
    """The images written whole in a folder beside the inbox (same filesystem)."""
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for i, data in enumerate(images):
        path = root / f"{prefix}-{i:04d}.jpg"
        path.write_bytes(data)
        out.append(path)
    return out


def rename_all_at_once(staged: dict[Path, list[Path]]) -> None:
    """Every inbox's files renamed in at the same moment, one thread per inbox."""
    gate = threading.Barrier(len(staged))

    def move(inbox: Path, paths: list[Path]) -> None:
        gate.wait()
        for p in paths:
            os.rename(p, inbox / p.name)

    threads = [threading.Thread(target=move, args=item) for item in staged.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def rows_at_least(ledger: Ledger, n: int) -> bool:
    with ledger.read() as s:
        return int(s.scalar(select(func.count()).select_from(File)) or 0) >= n


def race(
    settings_for: Callable[[Path], IngestSettings], ledgers: Ledgers, running: Any, root: Path
) -> None:
    """WATCHERS watchers, ROUNDS waves of the same N images into every inbox at
    once; then one original per hash, every other row a duplicate of it."""
    images = [image_bytes(90_000 + i, size=(24, 16)) for i in range(N)]
    settings = [settings_for(root / f"node{k}") for k in range(WATCHERS)]
    watchers = [Watcher(s, ledgers(), no_enqueue) for s in settings]
    audit = ledgers()
    with ExitStack() as stack:
        for w in watchers:
            stack.enter_context(running(w))
        for wave in range(ROUNDS):
            staged = {
                s.inbox: stage(s.inbox.parent / f"stage{wave}", images, f"w{wave}")
                for s in settings
            }
            rename_all_at_once(staged)
            expected = WATCHERS * N * (wave + 1)
            wait_for(partial(rows_at_least, audit, expected), timeout=60)

    rows = list_files(audit)
    assert len(rows) == WATCHERS * N * ROUNDS
    by_hash: dict[str | None, list[File]] = defaultdict(list)
    for row in rows:
        by_hash[row.sha256].append(row)
    assert len(by_hash) == N and None not in by_hash
    doubles: dict[str, int] = {}
    for sha, same in by_hash.items():
        assert sha is not None
        originals = [r for r in same if r.state not in NOT_ORIGINALS]
        if len(originals) != 1:
            doubles[sha[:12]] = len(originals)
            continue
        original = originals[0]
        assert original.state == FileState.QUEUED
        for r in same:
            if r is not original:
                assert r.state == FileState.DUPLICATE, (r.path, r.state, r.message)
                assert r.duplicate_of == original.id, (r.path, r.duplicate_of, original.id)
    assert not doubles, f"{len(doubles)} of {N} hashes have more than one original: {doubles}"


@pytest.mark.timeout(120)
def test_watchers_racing_the_same_bytes_record_one_original_per_hash(
    fast_settings: Callable[..., IngestSettings],
    ledgers: Ledgers,
    running: Any,
    tmp_path: Path,
) -> None:
    # Groups of every size: small ones lock per hash, bursts lock the whole intake.
    race(
        lambda node: fast_settings(data_dir=node / "var", inbox=node / "inbox"),
        ledgers,
        running,
        tmp_path,
    )


@pytest.mark.timeout(120)
def test_per_hash_locks_alone_keep_one_original_per_hash(
    fast_settings: Callable[..., IngestSettings],
    postgres: PostgresCluster,
    running: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every group, however large, takes one lock per hash (never the whole intake).
    monkeypatch.setattr(intake, "HASH_LOCKS_MAX", 1_000_000)
    url = postgres.fresh_database()
    handles = Ledgers(url)
    try:
        race(
            lambda node: fast_settings(
                data_dir=node / "var", inbox=node / "inbox", database_url=url
            ),
            handles,
            running,
            tmp_path,
        )
    finally:
        handles.close()
        postgres.drop(url)


def held_advisory_locks(s: Session) -> list[tuple[str, bool]]:
    """This session's advisory locks: (mode, one-bigint key?)."""
    rows = s.execute(
        text(
            "SELECT mode, objsubid FROM pg_locks "
            "WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted"
        )
    ).all()
    return sorted((r.mode, r.objsubid == 1) for r in rows)


def test_lock_content_holds_one_lock_per_hash_or_one_for_a_burst(
    postgres: PostgresCluster,
) -> None:
    url = postgres.fresh_database()
    led = open_ledger(url)
    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(intake.HASH_LOCKS_MAX + 1)]
    try:
        with led.write() as s:
            intake.lock_content(s, [*hashes[:3], hashes[0]])  # a hash twice: one lock
            assert held_advisory_locks(s) == [
                ("ExclusiveLock", True),
                ("ExclusiveLock", True),
                ("ExclusiveLock", True),
                ("ShareLock", False),
            ]
        with led.write() as s:
            assert held_advisory_locks(s) == []  # released at commit
            intake.lock_content(s, hashes)
            assert held_advisory_locks(s) == [("ExclusiveLock", False)]
    finally:
        led.dispose()
        postgres.drop(url)


def test_lock_keys_are_the_hashes_first_64_bits() -> None:
    assert intake.content_lock_key("00" * 7 + "01" + "ff" * 24) == 1
    assert intake.content_lock_key("ff" * 32) == -1
    assert intake.content_lock_key("80" + "00" * 31) == -(2**63)
    assert -(2**63) <= intake.content_lock_key("not a digest") < 2**63

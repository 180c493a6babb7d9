"""Writers of many `files` rows lock them in id order, so two never deadlock.

On PostgreSQL an UPDATE locks its rows in the order its plan meets them. The
watcher records where a group's files went (`set_final_path`, many rows in one
statement), while a worker hands an image id to that image's copies
(`record_uploaded`: every row `duplicate_of` it); with thousands of copies the
two met each other's rows in opposite orders and PostgreSQL aborted one with
`deadlock detected` (seen in a run with 3,000 copies of one image). Here the
two run at once, again and again, each on its own connection, the final paths
given in the reverse of id order: none may meet a deadlock, and every row ends
with both writes.
"""

from __future__ import annotations

import threading
from typing import Any, cast

import pytest
from sqlalchemy import Table, insert, select

from reka_ingest.core.states import FileState
from reka_ingest.ledger import Ledger
from reka_ingest.ledger.schema import File
from reka_ingest.ledger.uploads import Uploaded, record_uploaded, set_final_path
from tests.support.new_files import file_row

FILES = cast(Table, File.__table__)
COPIES = 2_000
ROUNDS = 6


def _both_at_once(
    ledger: Ledger, original: int, copies: list[int], round_: int
) -> list[BaseException]:
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def watcher() -> None:
        start.wait()
        set_final_path(ledger, [(i, f"/done/{round_}/{i}.jpg") for i in reversed(copies)], now=2.0)

    def worker() -> None:
        start.wait()
        result = Uploaded(original, f"img-{round_}", "https://x/y", 1, 2.0, FileState.INDEXING)
        record_uploaded(ledger, [result], request_id=None, now=2.0)

    def run(step: Any) -> None:
        try:
            step()
        except BaseException as err:  # noqa: BLE001 - reported by the test
            errors.append(err)

    threads = [threading.Thread(target=run, args=(step,)) for step in (watcher, worker)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return errors


def test_final_paths_and_copies_image_ids_written_at_once_never_deadlock(ledger: Ledger) -> None:
    if ledger.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: nothing to deadlock")
    with ledger.write() as s:
        original = s.scalars(
            insert(FILES)
            .values(file_row(0, state=FileState.UPLOADING, sha256="cd" * 32))
            .returning(FILES.c.id)
        ).one()
        s.execute(
            insert(FILES),
            [file_row(i, duplicate_of=original, sha256="ab" * 32) for i in range(1, COPIES + 1)],
        )
        copies = list(s.scalars(select(File.id).where(File.duplicate_of == original)))
    for round_ in range(ROUNDS):
        errors = _both_at_once(ledger, original, copies, round_)
        assert not errors, errors
        with ledger.read() as s:
            rows = s.execute(
                select(File.image_id, File.final_path).where(File.duplicate_of == original)
            ).all()
        assert {r.image_id for r in rows} == {f"img-{round_}"}
        assert all(r.final_path.startswith(f"/done/{round_}/") for r in rows)

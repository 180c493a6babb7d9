"""What the tests of the counts tables (`file_counts`, `batch_counts`) share: writers
in threads, open transactions that must not wait for one another, and a migration's
own module (its constants)."""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from sqlalchemy import Table, create_engine, text, update
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from reka_ingest.ledger import Ledger
from reka_ingest.ledger.db import MIGRATIONS_DIR

ATTEMPTS = 20


def migration(name: str) -> ModuleType:
    """The migration `name` (its file name without `.py`) as a module."""
    path = MIGRATIONS_DIR / "versions" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"migration_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_writers(
    ledger: Ledger, writers: int, rounds: int, write: Callable[[Session, int, int], None]
) -> None:
    """`writers` threads, each its own connection, each doing `write(session, writer,
    round)` `rounds` times, one transaction each; a transaction the database refuses
    as a conflict (an outage to the ledger) is retried whole. Raises what any met."""
    errors: list[BaseException] = []

    def work(w: int) -> None:
        try:
            for r in range(rounds):
                for attempt in range(ATTEMPTS):
                    try:
                        with ledger.write() as s:
                            write(s, w, r)
                        break
                    except Exception as err:
                        if not ledger.is_outage(err) or attempt == ATTEMPTS - 1:
                            raise
        except BaseException as err:  # noqa: BLE001 - reported by the main thread
            errors.append(err)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors


def moves_never_wait(
    ledger: Ledger, table: Table, ids: Sequence[int], values: dict[str, Any]
) -> None:
    """Each row of `ids` given `values` in a transaction of its own, all of them open at
    once (one connection each), none allowed to wait 2 s for a lock; then all commit."""
    engine = create_engine(ledger.url, poolclass=NullPool)
    conns = [engine.connect() for _ in ids]
    try:
        for conn, row_id in zip(conns, ids, strict=True):
            conn.execute(text("SET LOCAL lock_timeout = '2s'"))
            conn.execute(update(table).where(table.c.id == row_id).values(**values))
        for conn in conns:  # every one still open until here
            conn.commit()
    finally:
        for conn in conns:
            conn.close()
        engine.dispose()

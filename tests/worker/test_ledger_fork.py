"""The ledger's pooled connections across fork(): a child (Celery's prefork pool)
starts with an empty pool and writes on its own connection; the parent's
connections are neither used nor closed by the child."""

from __future__ import annotations

import os

from reka_ingest.core.states import Origin
from reka_ingest.ledger import Ledger
from reka_ingest.ledger.intake import NewFile, record_files
from reka_ingest.ledger.queries import list_files


def _new(name: str) -> NewFile:
    return NewFile(
        path=name,
        source_root="/in",
        work_path=f"/work/{name}",
        origin=Origin.EVENT,
        size=1,
        mtime=1.0,
        sha256=name.ljust(64, "0"),
        seen_at=1.0,
    )


def test_parent_and_forked_child_both_write(ledger: Ledger) -> None:
    record_files(ledger, [_new("before")], now=1.0)  # the parent's pool now holds one
    pid = os.fork()
    if pid == 0:  # the child: exit code says whether its write worked
        code = 1
        try:
            record_files(ledger, [_new("child")], now=2.0)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    record_files(ledger, [_new("after")], now=3.0)  # the parent's connection still works
    assert sorted(f.path for f in list_files(ledger)) == ["after", "before", "child"]

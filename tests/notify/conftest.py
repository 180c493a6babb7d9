"""Fixtures of the notification tests: runtimes on one fake clock against the real
Redis and the test's ledger (SQLite and PostgreSQL), files recorded and finished
in that ledger as the pipeline would leave them, and a webhook on loopback."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence

import pytest
from sqlalchemy import update

from reka_ingest.core.settings import Settings
from reka_ingest.core.states import FileState, Origin, Reason
from reka_ingest.ledger import open_ledger
from reka_ingest.ledger.intake import NewFile, record_files
from reka_ingest.ledger.schema import File
from tests.support.clock import Clock
from tests.support.webhook import Receiver, receiving
from worker.runtime import Runtime

_work = itertools.count()


@pytest.fixture
def clock() -> Clock:
    return Clock(1_700_000_000.0)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as r:
        yield r


@pytest.fixture
def make_rt(
    make_settings: Callable[..., Settings], clock: Clock, redis_url: str, database_url: str
) -> Iterator[Callable[..., Runtime]]:
    """Runtimes (each a detector, as two workers would be) on the test's clock, Redis
    and ledger; notifications on (a webhook URL that nothing serves) unless overridden."""
    made: list[Runtime] = []

    def make(**overrides: object) -> Runtime:
        base: dict[str, object] = {
            "redis_url": redis_url,
            "notify_url": "http://127.0.0.1:9/hook",
            "notify_settle_after": 30.0,
        }
        settings = make_settings(**(base | overrides))
        rt = Runtime(settings, open_ledger(settings.ingest.ledger_url), clock=clock)
        made.append(rt)
        return rt

    yield make
    for rt in made:
        rt.close()


def add_files(
    rt: Runtime, paths: Sequence[str], *, reason: Reason | None = None, root: str | None = None
) -> list[int]:
    """Rows for files seen now under the inbox (or `root`), queued (or failed with `reason`)."""
    now = rt.clock()
    new = [
        NewFile(
            path=path,
            source_root=root or str(rt.settings.ingest.inbox),
            work_path=f"/work/c{next(_work):07d}/{path.rsplit('/', 1)[-1]}",
            origin=Origin.EVENT,
            size=10,
            mtime=0.0,
            sha256=None,
            seen_at=now,
            reason=reason,
            message=None if reason is None else f"{reason} on purpose",
        )
        for path in paths
    ]
    return [r.file_id for r in record_files(rt.ledger, new, now=now)]


def finish(rt: Runtime, ids: Sequence[int], state: FileState, reason: Reason | None = None) -> None:
    """Files reach a final state now, as the uploader and the poller record it."""
    with rt.ledger.write() as s:
        s.execute(
            update(File)
            .where(File.id.in_(list(ids)))
            .values(state=state, reason=reason, finished_at=rt.clock(), updated_at=rt.clock())
        )

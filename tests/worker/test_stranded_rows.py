"""The beat sweep batches and sends queued rows whose batch was never made.

Real parts: the ledger (SQLite and PostgreSQL), Redis (the sweep drains parked
answers first), the stand-in for the uploads. Rows are recorded as the watcher
records them and then left without a batch, as when its COMMIT's answer was
lost or it was killed between the two writes: nothing else would batch them
until the watcher's next start.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from reka_ingest.core.states import BatchOutcome, FileState
from reka_ingest.ledger.queries import list_files
from reka_ingest.metrics.counters import RECONCILE_KEY, CounterSink
from reka_ingest.standin.runner import RunningStandin
from tests.support.clock import Clock
from tests.support.images import image_bytes
from tests.worker.conftest import KEY, record
from worker.runtime import Runtime
from worker.tasks import sweep_batches
from worker.uploader import upload_batch


@pytest.mark.usefixtures("database_url")
def test_rows_left_without_a_batch_are_batched_sent_and_uploaded(
    make_rt: Callable[..., Runtime], clock: Clock, standin: RunningStandin, redis_url: str
) -> None:
    rt = make_rt(batch_max_files=2, requeue_after=30.0, batch_max_wait=2.0)
    rt.counters = CounterSink.connect(redis_url)  # as a worker's runtime counts
    data = {f"cam/stranded-{i}.jpg": image_bytes(800 + i) for i in range(5)}
    ids = record(rt, data)  # as the watcher records them; their batch never made
    sent: list[int] = []

    clock.advance(31.0)  # a batcher may hold them this long yet (requeue_after + max_wait)
    assert sweep_batches(rt, sent.append) == []
    clock.advance(1.5)
    batches = sweep_batches(rt, sent.append)
    assert len(batches) == 3 and sent == batches  # 2 + 2 + 1: batch_max_files
    rows = {r.id: r for r in list_files(rt.ledger)}
    assert sorted(rows) == sorted(ids)
    assert {r.batch_id for r in rows.values()} == set(batches)
    counted = rt.counters.client.hgetall(RECONCILE_KEY)
    assert counted == {b"batches:unbatched": b"3", b"files:unbatched": b"5"}

    for batch in batches:
        assert upload_batch(rt, batch).outcome == BatchOutcome.DONE
    rows = {r.id: r for r in list_files(rt.ledger)}
    assert {r.state for r in rows.values()} == {FileState.INDEXING}
    assert all(r.image_id for r in rows.values())
    stats = httpx.get(f"{standin.base_url}/_standin/stats", headers={"X-Api-Key": KEY}).json()
    assert stats["uploads_accepted"] == 3
    clock.advance(60.0)
    assert sweep_batches(rt, sent.append) == []  # nothing left to batch or send
    assert len(sent) == 3
    rt.counters.close()

"""The broker lost its data (Redis started again empty, or flushed): the messages
of queued batches are gone, and the beat sweep sends them again at its next
tick instead of INGEST_REQUEUE_AFTER later (`worker.broker_loss`).

Real parts: Redis (the session's server, flushed as a restart without data
would leave it), the ledger on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from structlog.testing import capture_logs

from reka_ingest.core.states import BatchState
from reka_ingest.ledger.schema import Batch
from tests.support.clock import Clock
from tests.support.images import image_bytes
from tests.worker.conftest import stage
from worker.broker_loss import MARKER_KEY
from worker.runtime import Runtime
from worker.tasks import sweep_batches


@pytest.mark.usefixtures("database_url")
def test_queued_batches_are_sent_again_when_the_broker_lost_its_data(
    make_rt: Callable[..., Runtime], clock: Clock, redis_url: str
) -> None:
    rt = make_rt(requeue_after=600.0)  # a lost message alone would wait ten minutes
    broker = redis.Redis.from_url(redis_url)
    first = stage(rt, {"cam/a.jpg": image_bytes(1), "cam/b.jpg": image_bytes(2)})
    with rt.ledger.read() as s:
        assert s.get_one(Batch, first).queued_at is not None  # its message went out
    sent: list[int] = []

    # The first look at a new broker: whatever was sent before is not in it.
    clock.advance(1.0)
    assert sweep_batches(rt, sent.append) == [first]
    assert broker.exists(MARKER_KEY)
    clock.advance(1.0)
    assert sweep_batches(rt, sent.append) == []  # the same broker: nothing is lost

    second = stage(rt, {"cam/c.jpg": image_bytes(3)})
    clock.advance(1.0)
    broker.flushall()  # Redis again, without its data
    with capture_logs() as logs:
        assert sweep_batches(rt, sent.append) == [first, second]
    lost = [e for e in logs if e["event"] == "broker_data_lost"]
    assert lost and lost[0]["batches"] == 2, logs
    clock.advance(1.0)
    assert sweep_batches(rt, sent.append) == []
    assert sent == [first, first, second]

    # A batch being uploaded is not queued: its message was taken already.
    with rt.ledger.write() as s:
        held = s.get_one(Batch, first)
        held.state, held.lease_until = BatchState.UPLOADING, clock() + 600
    broker.flushall()
    clock.advance(1.0)
    assert sweep_batches(rt, sent.append) == [second]
    broker.close()

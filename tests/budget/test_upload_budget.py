"""The upload flow under the shared budget: the real stand-in (with its own
quota, on the test's clock), the real Redis, a real ledger and real files."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from reka_ingest.core.bundled_redis import free_port
from reka_ingest.core.constants import RATE_LIMIT_WINDOW_SECONDS as DAY
from reka_ingest.core.constants import REDIS_DOWN_WAIT
from reka_ingest.core.states import BatchState, FileState
from reka_ingest.ledger.db import Ledger
from reka_ingest.ledger.queries import list_files
from reka_ingest.ledger.reconcile import batches_to_send
from reka_ingest.ledger.schema import Batch
from reka_ingest.standin.runner import RunningStandin
from tests.budget.conftest import T0, stage_one_per_batch
from tests.support.clock import Clock
from tests.support.images import image_bytes
from worker.runtime import Runtime
from worker.uploader import upload_batch


def batch_row(ledger: Ledger, batch_id: int) -> Batch:
    with ledger.read() as s:
        row = s.get(Batch, batch_id)
        assert row is not None
        s.expunge(row)
        return row


def uploads_accepted(standin: RunningStandin) -> int:
    return standin.state.stats.uploads_accepted


def sweep_and_send(rt: Runtime) -> list[str]:
    """What beat's sweep and the workers would do now: send every batch that is due."""
    due = batches_to_send(rt.ledger, now=rt.clock(), requeue_after=600, limit=100)
    return [upload_batch(rt, batch).outcome for batch in due]


@pytest.mark.parametrize("upload_quota", [2])
def test_two_a_day_uploads_two_and_defers_three_until_the_window_frees(
    make_runtime: Callable[..., Runtime], standin: RunningStandin, clock: Clock
) -> None:
    rt = make_runtime(uploads_per_day=2, upload_max_retries=0)
    batches = stage_one_per_batch(rt, 5)
    outcomes = [upload_batch(rt, batch).outcome for batch in batches]
    assert outcomes == ["done", "done", "deferred", "deferred", "deferred"]
    assert uploads_accepted(standin) == 2
    for batch in batches[2:]:
        row = batch_row(rt.ledger, batch)
        assert (row.state, row.next_attempt_at) == (BatchState.DEFERRED, T0 + DAY)
        assert row.attempts == 0  # waiting for the quota spends no attempt
    states = [f.state for f in list_files(rt.ledger)]
    assert states == [FileState.INDEXING] * 2 + [FileState.QUEUED] * 3
    # The stand-in never had to say 429: the budget kept us inside its quota.
    assert "429" not in str(standin.state.stats.requests)
    snap = rt.budget.snapshot()
    assert (snap.used, snap.remaining, snap.refills_at) == (2, 0, T0 + DAY)

    # Not before their time...
    clock.now = T0 + DAY - 1
    assert sweep_and_send(rt) == []
    # ...then the window frees two slots: two go, the third waits for the next.
    clock.now = T0 + DAY
    assert sweep_and_send(rt) == ["done", "done", "deferred"]
    assert batch_row(rt.ledger, batches[4]).next_attempt_at == T0 + 2 * DAY
    clock.now = T0 + 2 * DAY
    assert sweep_and_send(rt) == ["done"]
    assert uploads_accepted(standin) == 5
    # With upload_max_retries=0, any counted attempt would have failed the files.
    assert {f.state for f in list_files(rt.ledger)} == {FileState.INDEXING}
    assert "429" not in str(standin.state.stats.requests)


@pytest.mark.parametrize("upload_quota", [1])
def test_a_429_from_the_server_defers_to_its_retry_after_and_pauses_everyone(
    make_runtime: Callable[..., Runtime], standin: RunningStandin, clock: Clock
) -> None:
    # Our budget allows 100 a day, the server 1; someone else spends it with the same key.
    outside = httpx.post(
        f"{standin.base_url}/v1/images/upload",
        headers=standin.headers,
        files=[("images", ("x.jpg", image_bytes(999), "image/jpeg"))],
        data={"metadata": json.dumps({"requests": [{"indexing_config": {"index": True}}]})},
    )
    assert outside.status_code == 200
    one = make_runtime(uploads_per_day=100, upload_max_retries=0)
    two = make_runtime(uploads_per_day=100, upload_max_retries=0)
    batches = stage_one_per_batch(one, 2)

    clock.now = T0 + 10
    report = upload_batch(two, batches[0])
    retry_at = T0 + DAY  # the stand-in's retry-after: when the outside request leaves
    assert (report.outcome, report.retry_at) == ("deferred", retry_at)
    assert standin.state.stats.requests["upload"] == {"200": 1, "429": 1}
    row = batch_row(two.ledger, batches[0])
    assert (row.state, row.next_attempt_at, row.attempts) == (BatchState.DEFERRED, retry_at, 0)
    assert "429" in (row.last_error or "")
    assert [f.state for f in list_files(two.ledger)] == [FileState.QUEUED] * 2

    # The pause is shared: the other worker sends nothing until then.
    assert one.budget.snapshot().paused_until == retry_at
    report = upload_batch(one, batches[1])
    assert (report.outcome, report.retry_at) == ("deferred", retry_at)
    assert "server_pause" in (report.error or "")
    assert standin.state.stats.requests["upload"] == {"200": 1, "429": 1}

    # When it ends, the server's one slot goes to one batch; its remaining=0 defers the other.
    clock.now = retry_at
    assert sweep_and_send(one) == ["done", "deferred"]
    assert standin.state.stats.requests["upload"] == {"200": 2, "429": 1}
    assert batch_row(one.ledger, batches[1]).next_attempt_at == retry_at + DAY
    clock.now = retry_at + DAY
    assert sweep_and_send(two) == ["done"]
    assert {f.state for f in list_files(one.ledger)} == {FileState.INDEXING}


def test_redis_down_defers_the_batch_briefly_and_sends_nothing(
    make_runtime: Callable[..., Runtime], standin: RunningStandin
) -> None:
    rt = make_runtime(redis_url=f"redis://127.0.0.1:{free_port()}/0", upload_max_retries=0)
    [batch] = stage_one_per_batch(rt, 1)
    report = upload_batch(rt, batch)
    assert (report.outcome, report.retry_at) == ("deferred", T0 + REDIS_DOWN_WAIT)
    assert "redis_unavailable" in (report.error or "")
    row = batch_row(rt.ledger, batch)
    assert (row.state, row.attempts) == (BatchState.DEFERRED, 0)
    assert list_files(rt.ledger)[0].state == FileState.QUEUED
    assert uploads_accepted(standin) == 0

"""A batch whose lease keeps running out with its outcome unknown is not taken for
ever: once it has used its attempts, the next claim fails its files
(`upload_failed`, `possible_duplicate` kept, the attempts named) instead of
uploading them once more.

Each "worker that dies mid-request" is what the ledger sees of one: a claim, its
files marked `uploading`, then nothing until the lease runs out. Real ledger
(SQLite and PostgreSQL), real stand-in and Redis for the run that ends it.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from reka_ingest.core.states import BatchOutcome, FileState, Reason
from reka_ingest.ledger.queries import list_files
from reka_ingest.ledger.uploads import claim_batch, mark_uploading
from reka_ingest.standin.runner import RunningStandin
from tests.support.clock import Clock
from tests.support.images import image_bytes
from tests.worker.conftest import KEY, stage
from worker.runtime import Runtime
from worker.tasks import sweep_batches
from worker.uploader import upload_batch


def die_mid_request(rt: Runtime, batch_id: int, clock: Clock) -> None:
    """A run that claims the batch, marks its files uploading and dies; its lease runs out."""
    claimed = claim_batch(rt.ledger, batch_id, now=clock(), lease=rt.settings.ingest.batch_lease)
    assert claimed is not None and claimed.files
    mark_uploading(rt.ledger, [f.id for f in claimed.files], now=clock(), hold=claimed.hold)
    clock.advance(rt.settings.ingest.batch_lease + 1)


@pytest.mark.usefixtures("database_url")
def test_a_batch_out_of_attempts_fails_at_its_next_claim_instead_of_uploading(
    make_rt: Callable[..., Runtime], standin: RunningStandin, clock: Clock
) -> None:
    rt = make_rt(upload_max_retries=2)  # three attempts in all
    data = {f"cam/lost-{i}.jpg": image_bytes(500 + i) for i in range(3)}
    batch = stage(rt, data)
    for _ in range(3):
        die_mid_request(rt, batch, clock)

    sent: list[int] = []
    assert sweep_batches(rt, sent.append) == [batch]  # the lease ran out: sent again
    report = upload_batch(rt, batch)
    assert (report.outcome, report.failed, report.uploaded) == (BatchOutcome.FAILED, 3, 0)
    stats = httpx.get(f"{standin.base_url}/_standin/stats", headers={"X-Api-Key": KEY}).json()
    assert stats["requests"].get("upload", {}) == {} and stats["uploads_accepted"] == 0

    rows = list_files(rt.ledger)
    assert {(r.state, r.reason, r.possible_duplicate) for r in rows} == {
        (FileState.FAILED, Reason.UPLOAD_FAILED, True)
    }
    for r in rows:
        assert "gave up after 3 attempts" in (r.message or "")
        assert "may hold a copy" in (r.message or "")
        record = json.loads(
            (rt.settings.ingest.failed_path / f"{r.path}.error.json").read_text(encoding="utf-8")
        )
        assert record["reason"] == "upload_failed"
        assert (rt.settings.ingest.failed_path / r.path).read_bytes() == data[r.path]

    # Finished: neither a later sweep nor a redelivered task takes it again.
    clock.advance(rt.settings.ingest.batch_lease + 1)
    assert sweep_batches(rt, sent.append) == []
    assert upload_batch(rt, batch).outcome == BatchOutcome.SKIPPED


@pytest.mark.usefixtures("database_url")
def test_a_batch_with_attempts_left_is_still_sent_again_and_flagged(
    make_rt: Callable[..., Runtime], standin: RunningStandin, clock: Clock
) -> None:
    rt = make_rt(upload_max_retries=2)
    data = {f"cam/again-{i}.jpg": image_bytes(600 + i) for i in range(2)}
    batch = stage(rt, data)
    for _ in range(2):
        die_mid_request(rt, batch, clock)

    report = upload_batch(rt, batch)  # the third and last attempt
    assert (report.outcome, report.uploaded) == (BatchOutcome.DONE, 2)
    rows = list_files(rt.ledger)
    assert {(r.state, r.possible_duplicate) for r in rows} == {(FileState.INDEXING, True)}
    stats = httpx.get(f"{standin.base_url}/_standin/stats", headers={"X-Api-Key": KEY}).json()
    assert stats["uploads_accepted"] == 1

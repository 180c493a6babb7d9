"""upload_batch and poll_due without Celery: a real ledger, a real stand-in
server on loopback, real files in the work area."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from reka_ingest.core.bundled_redis import free_port
from reka_ingest.core.settings import Settings
from reka_ingest.core.states import BatchOutcome, FileState, Origin, Reason
from reka_ingest.ledger import Ledger, open_ledger
from reka_ingest.ledger.intake import NewFile, create_batch, record_files
from reka_ingest.ledger.queries import list_files
from reka_ingest.ledger.uploads import claim_batch, mark_uploading
from reka_ingest.standin.runner import RunningStandin
from tests.support.clock import Clock
from tests.support.images import image_bytes
from tests.worker.conftest import KEY
from worker.poller import poll_due
from worker.runtime import Runtime
from worker.uploader import upload_batch


@pytest.fixture
def rt(
    make_settings: Callable[..., Settings], standin: RunningStandin, clock: Clock, redis_url: str
) -> Iterator[Runtime]:
    settings = make_settings(
        api_key=KEY, api_base_url=standin.base_url, retry_backoff_base=1.0, redis_url=redis_url
    )
    led = open_ledger(settings.ingest.ledger_url)
    runtime = Runtime(settings, led, clock=clock)
    yield runtime
    runtime.close()


def stage(
    rt: Runtime, blobs: list[tuple[str, bytes]], sidecar: dict[str, object] | None = None
) -> int:
    """Place files in the work area as the watcher would, record them, batch them."""
    work = rt.settings.ingest.work_dir
    new = []
    for i, (name, data) in enumerate(blobs):
        claim = work / f"t{i:04d}"
        claim.mkdir(parents=True, exist_ok=True)
        path = claim / name
        path.write_bytes(data)
        new.append(
            NewFile(
                path=f"sub/{name}",
                source_root=str(rt.settings.ingest.inbox),
                work_path=str(path),
                origin=Origin.EVENT,
                size=len(data),
                mtime=0.0,
                sha256=hashlib.sha256(data).hexdigest(),
                seen_at=rt.clock(),
                sidecar=sidecar,
            )
        )
    recorded = record_files(rt.ledger, new, now=rt.clock())
    return create_batch(rt.ledger, [r.file_id for r in recorded], now=rt.clock())


def by_name(ledger: Ledger) -> dict[str, object]:
    return {Path(f.path).name: f for f in list_files(ledger)}


def test_a_batch_uploads_in_order_and_moves_to_done(rt: Runtime, standin: RunningStandin) -> None:
    blobs = [(f"img{i}.jpg", image_bytes(i)) for i in range(5)]
    batch = stage(rt, blobs, sidecar={"camera_id": "cam-7", "caption": "a red bus"})
    report = upload_batch(rt, batch)
    assert (report.outcome, report.uploaded, report.failed) == ("done", 5, 0)
    assert report.request_id
    files = list_files(rt.ledger)
    assert {f.state for f in files} == {FileState.INDEXING}
    for f, (name, data) in zip(files, blobs, strict=True):
        assert f.image_id and f.upload_request_id == report.request_id
        received = httpx.get(
            f"{standin.base_url}/_standin/images/{f.image_id}", headers={"X-Api-Key": KEY}
        ).json()
        assert received["filename"] == name
        assert received["sha256"] == hashlib.sha256(data).hexdigest()
        assert received["metadata"]["camera_id"] == "cam-7"
        assert Path(f.final_path or "").read_bytes() == data
        assert Path(f.final_path or "").is_relative_to(rt.settings.ingest.done_path / "sub")
    assert not any(rt.settings.ingest.work_dir.iterdir())
    # Running the task again (a redelivery) does nothing.
    assert upload_batch(rt, batch).outcome == "skipped"


def test_bad_files_fail_alone_with_reason_files(rt: Runtime) -> None:
    good = image_bytes(10)
    batch = stage(rt, [("good.jpg", good), ("empty.jpg", b""), ("notes.jpg", b"not an image")])
    report = upload_batch(rt, batch)
    assert (report.uploaded, report.failed) == (1, 2)
    files = by_name(rt.ledger)
    assert files["good.jpg"].state == FileState.INDEXING  # type: ignore[attr-defined]
    assert files["empty.jpg"].reason == Reason.EMPTY_FILE  # type: ignore[attr-defined]
    assert files["notes.jpg"].reason == Reason.NOT_AN_IMAGE  # type: ignore[attr-defined]
    error_file = rt.settings.ingest.failed_path / "sub" / "notes.jpg.error.json"
    record = json.loads(error_file.read_text())
    assert record["reason"] == "not_an_image" and record["path"] == "sub/notes.jpg"
    assert (rt.settings.ingest.failed_path / "sub" / "notes.jpg").read_bytes() == b"not an image"


def test_413_splits_until_each_request_fits(rt: Runtime, standin: RunningStandin) -> None:
    standin.state.config = standin.state.config.model_copy(update={"max_images_per_request": 2})
    batch = stage(rt, [(f"s{i}.png", image_bytes(i, fmt="PNG")) for i in range(5)])
    pending, outcomes = [batch], []
    while pending:
        report = upload_batch(rt, pending.pop())
        outcomes.append(report.outcome)
        pending.extend(report.enqueue)
    assert outcomes.count(BatchOutcome.SPLIT) >= 2
    assert {f.state for f in list_files(rt.ledger)} == {FileState.INDEXING}


def test_server_errors_defer_then_fail_after_the_last_attempt(
    rt: Runtime, standin: RunningStandin
) -> None:
    standin.state.faults.update({"fail_share": 1.0})
    batch = stage(rt, [("x.jpg", image_bytes(20))])
    clock = rt.clock
    attempts = rt.settings.ingest.upload_max_retries + 1
    for n in range(1, attempts + 1):
        report = upload_batch(rt, batch)
        if n < attempts:
            assert report.outcome == "deferred" and report.retry_at
            assert list_files(rt.ledger)[0].state == FileState.QUEUED
            # Not before its time...
            assert claim_batch(rt.ledger, batch, now=clock(), lease=60) is None
            clock.now = report.retry_at  # type: ignore[attr-defined]
    assert report.outcome == "failed"
    row = list_files(rt.ledger)[0]
    assert (row.state, row.reason) == (FileState.FAILED, Reason.UPLOAD_FAILED)
    assert "500" in (row.message or "")


def test_a_refused_key_fails_files_with_auth_failed(
    make_settings: Callable[..., Settings], standin: RunningStandin, redis_url: str
) -> None:
    settings = make_settings(
        api_key="wrong-key", api_base_url=standin.base_url, redis_url=redis_url
    )
    rt = Runtime(settings, open_ledger(settings.ingest.ledger_url), clock=Clock())
    batch = stage(rt, [("a.jpg", image_bytes(30))])
    assert upload_batch(rt, batch).outcome == "failed"
    row = list_files(rt.ledger)[0]
    assert row.reason == Reason.AUTH_FAILED
    assert "wrong-key" not in (row.message or "")
    rt.close()


def test_a_lease_that_ran_out_flags_possible_duplicates(rt: Runtime) -> None:
    batch = stage(rt, [("a.jpg", image_bytes(40))])
    first = claim_batch(rt.ledger, batch, now=rt.clock(), lease=60)
    assert first is not None

    mark_uploading(rt.ledger, [first.files[0].id], now=rt.clock(), hold=first.hold)
    # A second delivery while the lease holds is turned away...
    assert claim_batch(rt.ledger, batch, now=rt.clock() + 30, lease=60) is None
    # ...and after it ran out (the worker died mid-request) the retry is flagged.
    again = claim_batch(rt.ledger, batch, now=rt.clock() + 61, lease=60)
    assert again is not None and again.outcome_unknown
    assert list_files(rt.ledger)[0].possible_duplicate


def test_a_connection_dropped_after_the_server_stored_flags_possible_duplicates(
    rt: Runtime, standin: RunningStandin
) -> None:
    """The server stored the images, the answer never came: the files are flagged
    at once, so the copy the next send makes is accounted for (and so is a file
    whose retries then run out, with its image on the server)."""
    standin.state.faults.update({"drop_share": 1.0, "drop_when": "after"})
    batch = stage(rt, [("d.jpg", image_bytes(60))])
    report = upload_batch(rt, batch)
    assert report.outcome == "deferred" and report.retry_at
    row = list_files(rt.ledger)[0]
    assert (row.state, row.possible_duplicate) == (FileState.QUEUED, True)
    assert len(standin.state.store) == 1  # stored, and the client never learned its id

    standin.state.faults.update({"drop_share": 0.0})
    rt.clock.now = report.retry_at  # type: ignore[attr-defined]
    assert upload_batch(rt, batch).outcome == "done"
    assert len(standin.state.store) == 2  # a second copy: flagged
    assert list_files(rt.ledger)[0].possible_duplicate


def test_a_500_or_a_refused_connection_does_not_flag(
    make_settings: Callable[..., Settings], standin: RunningStandin, redis_url: str
) -> None:
    """An answer (500) or no connection at all (refused): nothing was stored."""
    standin.state.faults.update({"fail_share": 1.0})
    for seed, base_url in enumerate((standin.base_url, f"http://127.0.0.1:{free_port()}")):
        settings = make_settings(api_key=KEY, api_base_url=base_url, redis_url=redis_url)
        rt = Runtime(settings, open_ledger(settings.ingest.ledger_url), clock=Clock())
        batch = stage(rt, [(f"n{seed}.jpg", image_bytes(70 + seed))])
        assert upload_batch(rt, batch).outcome == "deferred"
        assert not any(f.possible_duplicate for f in list_files(rt.ledger)), base_url
        rt.close()


def test_polling_moves_files_to_their_final_state(rt: Runtime, standin: RunningStandin) -> None:
    standin.state.faults.update({"index_delay": 5.0})
    batch = stage(rt, [(f"p{i}.jpg", image_bytes(50 + i)) for i in range(3)])
    assert upload_batch(rt, batch).uploaded == 3
    clock = rt.clock
    assert poll_due(rt).polled == 0  # nothing is due before the first delay
    clock.now += rt.settings.ingest.poll_initial_delay  # type: ignore[attr-defined]
    # Due, but not indexed yet: each row waits longer than the last time.
    report = poll_due(rt)
    assert (report.polled, report.waiting) == (3, 3)
    assert {r.poll_delay for r in list_files(rt.ledger)} == {4.0}
    clock.now += 5  # type: ignore[attr-defined]
    assert poll_due(rt).indexed == 3
    rows = list_files(rt.ledger)
    assert {r.state for r in rows} == {FileState.INDEXED}
    assert all(r.indexing_status == 2 and r.indexed_at for r in rows)


def test_polling_past_the_deadline_times_out(rt: Runtime, standin: RunningStandin) -> None:
    standin.state.faults.update({"index_delay": 10_000.0})
    batch = stage(rt, [("slow.jpg", image_bytes(60))])
    upload_batch(rt, batch)
    rt.clock.now += rt.settings.ingest.index_deadline + 1  # type: ignore[attr-defined]
    poll_due(rt)
    row = list_files(rt.ledger)[0]
    assert (row.state, row.reason) == (FileState.FAILED, Reason.INDEXING_TIMEOUT)


def test_indexing_failure_is_recorded(rt: Runtime, standin: RunningStandin) -> None:
    standin.state.faults.update({"index_fail_share": 1.0})
    upload_batch(rt, stage(rt, [("f.jpg", image_bytes(70))]))
    rt.clock.now += 100  # type: ignore[attr-defined]
    poll_due(rt)
    row = list_files(rt.ledger)[0]
    assert (row.state, row.reason) == (FileState.FAILED, Reason.INDEXING_FAILED)


def test_one_sweep_polls_every_due_row_in_rounds_up_to_its_bound(
    rt: Runtime, standin: RunningStandin
) -> None:
    batch = stage(rt, [(f"r{i}.jpg", image_bytes(80 + i)) for i in range(5)])
    assert upload_batch(rt, batch).uploaded == 5
    rt.clock.now += rt.settings.ingest.poll_initial_delay  # type: ignore[attr-defined]
    assert poll_due(rt, limit=2, rounds=2).polled == 4  # two full rounds, then the bound
    assert poll_due(rt, limit=2).indexed == 1  # a round that is not full ends the sweep
    assert {r.state for r in list_files(rt.ledger)} == {FileState.INDEXED}

"""Files whose indexing ends in failure or timeout: the poll sweep puts their
bytes in failed/ beside NAME.error.json (from done/, the work area, or not at
all: after_upload=delete, in-place rows), each file alone, and `reka-ingest
retry --reason indexing_failed|indexing_timeout` sends them again.

Real parts throughout: a SQLite ledger, the stand-in on loopback (its fault
knobs make indexing fail or never finish), real files, the real command line
and the real Redis it enqueues to."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reka_ingest.cli.main import app
from reka_ingest.core.constants import POLL_LEASE_SECONDS
from reka_ingest.core.states import FileState, Reason
from reka_ingest.ledger.polling import take_unsettled_failures
from reka_ingest.ledger.queries import list_files
from reka_ingest.standin.runner import RunningStandin
from tests.budget.test_retry_and_status import use_env
from tests.support.clock import Clock
from tests.support.images import image_bytes
from tests.worker.conftest import KEY, rows_by_path, stage
from worker.poller import poll_due
from worker.runtime import Runtime
from worker.uploader import upload_batch


def reason_record(rt: Runtime, rel: str) -> dict[str, object]:
    path = rt.settings.ingest.failed_path / f"{rel}.error.json"
    record: dict[str, object] = json.loads(path.read_text(encoding="utf-8"))
    return record


def retry(monkeypatch: pytest.MonkeyPatch, rt: Runtime, reason: Reason) -> tuple[int, str]:
    use_env(monkeypatch, rt, REKA_API_KEY=KEY)
    result = CliRunner().invoke(app, ["retry", "--reason", reason.value])
    return result.exit_code, result.output


def test_a_file_whose_indexing_fails_goes_to_failed_and_retry_uploads_it_again(
    make_rt: Callable[..., Runtime],
    standin: RunningStandin,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rt = make_rt()
    data = image_bytes(70)
    standin.state.faults.update({"index_fail_share": 1.0})
    assert upload_batch(rt, stage(rt, {"cam/f.jpg": data})).uploaded == 1
    [row] = list_files(rt.ledger)
    in_done = Path(row.final_path or "")
    assert in_done.is_relative_to(rt.settings.ingest.done_path) and in_done.is_file()

    clock.advance(100)
    assert poll_due(rt).failed == 1
    [row] = list_files(rt.ledger)
    in_failed = rt.settings.ingest.failed_path / "cam" / "f.jpg"
    assert (row.state, row.reason) == (FileState.FAILED, Reason.INDEXING_FAILED)
    assert row.final_path == f"{in_failed}.error.json"
    assert in_failed.read_bytes() == data and not in_done.exists()
    record = reason_record(rt, "cam/f.jpg")
    assert record["reason"] == "indexing_failed" and record["moved_to"] == str(in_failed)
    assert record["image_id"] == row.image_id and record["sha256"] == row.sha256

    standin.state.faults.update({"index_fail_share": 0.0})
    code, output = retry(monkeypatch, rt, Reason.INDEXING_FAILED)
    assert code == 0, output
    assert "requeued 1 file(s) in 1 batch(es)" in output
    [row] = list_files(rt.ledger)
    assert row.state == FileState.QUEUED and row.batch_id is not None
    assert not in_failed.exists() and not Path(f"{in_failed}.error.json").exists()

    assert upload_batch(rt, row.batch_id).uploaded == 1
    clock.advance(100)
    assert poll_due(rt).indexed == 1
    [row] = list_files(rt.ledger)
    assert row.state == FileState.INDEXED
    assert Path(row.final_path or "").read_bytes() == data


def test_a_file_still_indexing_at_the_deadline_goes_to_failed_and_retry_uploads_it_again(
    make_rt: Callable[..., Runtime],
    standin: RunningStandin,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rt = make_rt(index_deadline=5.0)
    data = image_bytes(71)
    standin.state.faults.update({"index_delay": 10_000.0})
    assert upload_batch(rt, stage(rt, {"slow.jpg": data})).uploaded == 1
    clock.advance(6)
    assert poll_due(rt).failed == 1
    [row] = list_files(rt.ledger)
    in_failed = rt.settings.ingest.failed_path / "slow.jpg"
    assert (row.state, row.reason) == (FileState.FAILED, Reason.INDEXING_TIMEOUT)
    assert in_failed.read_bytes() == data
    assert row.final_path == f"{in_failed}.error.json"
    assert reason_record(rt, "slow.jpg")["reason"] == "indexing_timeout"
    assert not any(rt.settings.ingest.done_path.rglob("slow.jpg"))

    standin.state.faults.update({"index_delay": 0.0})
    code, output = retry(monkeypatch, rt, Reason.INDEXING_TIMEOUT)
    assert code == 0, output
    assert "requeued 1 file(s)" in output
    [row] = list_files(rt.ledger)
    assert row.batch_id is not None
    assert upload_batch(rt, row.batch_id).uploaded == 1
    [row] = list_files(rt.ledger)
    assert row.state == FileState.INDEXED  # index delay 0: indexed at once


def test_a_file_whose_folder_in_failed_is_blocked_fails_alone_and_is_retried(
    make_rt: Callable[..., Runtime],
    standin: RunningStandin,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rt = make_rt()
    blobs = {"bad/a.jpg": image_bytes(72), "good/b.jpg": image_bytes(73)}
    standin.state.faults.update({"index_fail_share": 1.0})
    assert upload_batch(rt, stage(rt, blobs)).uploaded == 2
    # A plain file where failed/bad/ should be: a.jpg cannot go under its own folder.
    failed = rt.settings.ingest.failed_path
    failed.mkdir(parents=True, exist_ok=True)
    (failed / "bad").write_bytes(b"in the way")

    clock.advance(100)
    assert poll_due(rt).settled == 2
    rows = rows_by_path(rt)
    a, b = rows["bad/a.jpg"], rows["good/b.jpg"]
    assert (failed / "good" / "b.jpg").read_bytes() == blobs["good/b.jpg"]
    assert b.final_path == str(failed / "good" / "b.jpg.error.json")
    # a.jpg took the outbox's flat name at failed/'s top, its reason file beside it.
    assert a.final_path == str(failed / f"{a.id}.jpg.error.json")
    assert (failed / f"{a.id}.jpg").read_bytes() == blobs["bad/a.jpg"]
    assert not any(rt.settings.ingest.done_path.rglob("*.jpg"))

    code, output = retry(monkeypatch, rt, Reason.INDEXING_FAILED)
    assert code == 0, output
    assert "requeued 2 file(s) in 1 batch(es)" in output


def test_files_that_cannot_be_moved_now_stay_failed_and_a_later_sweep_moves_them(
    make_rt: Callable[..., Runtime], standin: RunningStandin, clock: Clock
) -> None:
    rt = make_rt()
    blobs = {"x/a.jpg": image_bytes(77), "y/b.jpg": image_bytes(78)}
    standin.state.faults.update({"index_fail_share": 1.0})
    assert upload_batch(rt, stage(rt, blobs)).uploaded == 2
    done = {f.path: Path(f.final_path or "") for f in list_files(rt.ledger)}
    # failed/ itself is a plain file: nothing can be placed there, not even a reason file.
    failed = rt.settings.ingest.failed_path
    failed.parent.mkdir(parents=True, exist_ok=True)
    failed.write_bytes(b"in the way")

    clock.advance(100)
    report = poll_due(rt)
    assert (report.failed, report.settled) == (2, 0)  # the sweep itself went on
    for rel, row in rows_by_path(rt).items():
        assert (row.state, row.reason) == (FileState.FAILED, Reason.INDEXING_FAILED)
        assert row.final_path == str(done[rel])  # still where the upload put them
        assert done[rel].read_bytes() == blobs[rel]

    failed.unlink()
    report = poll_due(rt)  # nothing is due to poll; the leftovers are settled
    assert (report.polled, report.settled) == (0, 2)
    for rel, row in rows_by_path(rt).items():
        assert row.final_path == str(failed / f"{rel}.error.json")
        assert (failed / rel).read_bytes() == blobs[rel]
        assert reason_record(rt, rel)["reason"] == "indexing_failed"
        assert not done[rel].exists()
    assert poll_due(rt).settled == 0  # settled once, never again


def test_a_file_another_sweep_is_settling_is_left_to_it_until_its_lease_runs_out(
    make_rt: Callable[..., Runtime], standin: RunningStandin, clock: Clock
) -> None:
    rt = make_rt()
    standin.state.faults.update({"index_fail_share": 1.0})
    assert upload_batch(rt, stage(rt, {"l.jpg": image_bytes(80)})).uploaded == 1
    clock.advance(100)
    report = poll_due(rt)
    assert (report.failed, report.settled) == (1, 1)  # settled at once by this sweep
    assert poll_due(rt).settled == 0
    # Make a second one, and let another sweep take it first (it dies holding it).
    assert upload_batch(rt, stage(rt, {"m.jpg": image_bytes(81)})).uploaded == 1
    failed = rt.settings.ingest.failed_path
    failed.rename(failed.with_name("failed-aside"))
    failed.write_bytes(b"in the way")
    clock.advance(100)
    assert poll_due(rt).settled == 0
    failed.unlink()
    failed.with_name("failed-aside").rename(failed)
    [taken] = take_unsettled_failures(
        rt.ledger, settled_suffix=".error.json", now=clock(), lease=POLL_LEASE_SECONDS, limit=10
    )
    assert taken.path == "m.jpg"
    assert poll_due(rt).settled == 0  # not while the other sweep's lease holds
    clock.advance(POLL_LEASE_SECONDS + 1)
    assert poll_due(rt).settled == 1
    assert (failed / "m.jpg").is_file()
    assert rows_by_path(rt)["m.jpg"].final_path == str(failed / "m.jpg.error.json")


def test_retry_takes_bytes_still_in_done_when_the_sweep_could_not_move_them(
    make_rt: Callable[..., Runtime],
    standin: RunningStandin,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rt = make_rt()
    data = image_bytes(79)
    standin.state.faults.update({"index_fail_share": 1.0})
    assert upload_batch(rt, stage(rt, {"z/c.jpg": data})).uploaded == 1
    failed = rt.settings.ingest.failed_path
    failed.parent.mkdir(parents=True, exist_ok=True)
    failed.write_bytes(b"in the way")
    clock.advance(100)
    assert poll_due(rt).settled == 0
    [row] = list_files(rt.ledger)
    in_done = Path(row.final_path or "")
    assert in_done.is_relative_to(rt.settings.ingest.done_path)

    code, output = retry(monkeypatch, rt, Reason.INDEXING_FAILED)
    assert code == 0, output
    assert "requeued 1 file(s)" in output
    [row] = list_files(rt.ledger)
    assert row.state == FileState.QUEUED and not in_done.exists()
    assert Path(row.work_path).read_bytes() == data
    failed.unlink()
    assert poll_due(rt).settled == 0  # a requeued row is no failure to settle


def test_after_upload_delete_leaves_a_reason_file_and_retry_says_the_bytes_are_gone(
    make_rt: Callable[..., Runtime],
    standin: RunningStandin,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rt = make_rt(after_upload="delete")
    standin.state.faults.update({"index_fail_share": 1.0})
    assert upload_batch(rt, stage(rt, {"gone.jpg": image_bytes(74)})).uploaded == 1
    clock.advance(100)
    assert poll_due(rt).failed == 1
    [row] = list_files(rt.ledger)
    record = reason_record(rt, "gone.jpg")
    assert record["reason"] == "indexing_failed" and record["moved_to"] is None
    assert row.final_path == str(rt.settings.ingest.failed_path / "gone.jpg.error.json")

    code, output = retry(monkeypatch, rt, Reason.INDEXING_FAILED)
    assert code != 0, output
    assert "requeued 0 file(s)" in output and "bytes missing" in output
    assert list_files(rt.ledger)[0].state == FileState.FAILED


def test_after_upload_keep_moves_the_kept_file_with_its_sidecar_to_failed(
    make_rt: Callable[..., Runtime], standin: RunningStandin, clock: Clock
) -> None:
    rt = make_rt(after_upload="keep")
    data = image_bytes(75)
    standin.state.faults.update({"index_fail_share": 1.0})
    batch = stage(rt, {"kept.jpg": data})
    [row] = list_files(rt.ledger)
    Path(row.work_path).with_name("kept.json").write_text("{}")  # its sidecar, claimed with it
    assert upload_batch(rt, batch).uploaded == 1
    assert Path(row.work_path).is_file()  # kept in the work area
    clock.advance(100)
    assert poll_due(rt).failed == 1
    failed = rt.settings.ingest.failed_path
    assert (failed / "kept.jpg").read_bytes() == data
    assert (failed / "kept.json").read_text() == "{}"
    assert not Path(row.work_path).exists()
    assert list_files(rt.ledger)[0].final_path == str(failed / "kept.jpg.error.json")


def test_an_in_place_file_stays_put_gets_a_reason_file_and_is_retried_in_place(
    make_rt: Callable[..., Runtime],
    standin: RunningStandin,
    clock: Clock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rt = make_rt()
    tree = tmp_path / "archive"
    data = image_bytes(76)
    standin.state.faults.update({"index_fail_share": 1.0})
    assert upload_batch(rt, stage(rt, {"2019/x.jpg": data}, root=tree)).uploaded == 1
    clock.advance(100)
    assert poll_due(rt).failed == 1
    [row] = list_files(rt.ledger)
    assert (tree / "2019" / "x.jpg").read_bytes() == data  # the user's own tree is never moved
    assert row.final_path == str(rt.settings.ingest.failed_path / "2019" / "x.jpg.error.json")
    assert reason_record(rt, "2019/x.jpg")["moved_to"] is None

    code, output = retry(monkeypatch, rt, Reason.INDEXING_FAILED)
    assert code == 0, output
    [row] = list_files(rt.ledger)
    assert (row.state, row.work_path) == (FileState.QUEUED, str(tree / "2019" / "x.jpg"))

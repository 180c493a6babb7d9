"""`reka-ingest delete`: images deleted from the stand-in on request, by path,
image id, state or time found; every row holding a deleted image recorded
`deleted` (terminal) with a time, a reason and a message; the bytes stay.

Real parts: the stand-in on loopback, a ledger on SQLite and on PostgreSQL,
real Redis, real files, the real command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from reka_ingest.cli import delete as delete_cmd
from reka_ingest.cli.main import app
from reka_ingest.core.states import FileState, Reason
from reka_ingest.ledger.queries import list_files
from reka_ingest.ledger.schema import File
from reka_ingest.standin.runner import RunningStandin
from tests.budget.test_retry_and_status import use_env
from tests.serverside.conftest import FAST
from tests.support.clock import Clock
from tests.support.images import image_bytes
from tests.worker.conftest import KEY, rows_by_path, stage
from worker.poller import poll_due
from worker.runtime import Runtime
from worker.uploader import upload_batch

REPO = Path(__file__).resolve().parents[2]


def indexed(rt: Runtime, clock: Clock, blobs: dict[str, bytes]) -> dict[str, File]:
    assert upload_batch(rt, stage(rt, blobs)).uploaded == len(blobs)
    clock.advance(10)
    poll_due(rt)
    return rows_by_path(rt)


def delete(
    monkeypatch: pytest.MonkeyPatch, rt: Runtime, *args: str, answer: str | None = None
) -> tuple[int, str]:
    use_env(monkeypatch, rt, REKA_API_KEY=KEY, INGEST_CHECK_REQUESTS_PER_SECOND=str(FAST))
    result = CliRunner().invoke(app, ["delete", *args], input=answer)
    return result.exit_code, result.output


def held(standin: RunningStandin, image_id: str | None) -> bool:
    return standin.state.store.get(image_id or "") is not None


def test_delete_by_path_lists_with_dry_run_then_deletes_with_yes(
    rt: Runtime, clock: Clock, standin: RunningStandin, monkeypatch: pytest.MonkeyPatch
) -> None:
    blobs = {
        "cam1/a.jpg": image_bytes(1),
        "cam1/b.jpg": image_bytes(2),
        "cam2/c.jpg": image_bytes(3),
    }
    rows = indexed(rt, clock, blobs)

    code, output = delete(monkeypatch, rt, "--path", "cam1/*", "--dry-run")
    assert code == 0, output
    assert "2 file(s) match" in output and "would delete 2 image(s)" in output
    assert all(held(standin, r.image_id) for r in rows.values())
    assert {r.state for r in list_files(rt.ledger)} == {FileState.INDEXED}

    code, output = delete(monkeypatch, rt, "--path", "cam1/*", "--yes")
    assert code == 0, output
    assert "deleted 2 image(s)" in output
    after = rows_by_path(rt)
    for path in ("cam1/a.jpg", "cam1/b.jpg"):
        row = after[path]
        assert (row.state, row.reason) == (FileState.DELETED, Reason.DELETED)
        assert not held(standin, row.image_id)
        assert "on request" in (row.message or "") and (row.image_id or "?") in (row.message or "")
        assert Path(row.final_path or "").read_bytes() == blobs[path]  # the bytes stay
    assert after["cam2/c.jpg"].state == FileState.INDEXED and held(
        standin, rows["cam2/c.jpg"].image_id
    )

    code, output = delete(monkeypatch, rt, "--path", "cam1/*", "--yes")
    assert code == 1 and "nothing matched" in output  # deleted rows are not selected again


def test_delete_by_image_id_records_the_copies_that_share_the_image(
    rt: Runtime, clock: Clock, standin: RunningStandin, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = image_bytes(10)
    rows = indexed(rt, clock, {"first.jpg": data})
    stage(rt, {"again.jpg": data})  # the same bytes: a duplicate carrying the first's image
    copy = rows_by_path(rt)["again.jpg"]
    assert copy.state == FileState.DUPLICATE and copy.image_id == rows["first.jpg"].image_id

    code, output = delete(monkeypatch, rt, "--image-id", rows["first.jpg"].image_id or "", "--yes")
    assert code == 0, output
    after = rows_by_path(rt)
    assert {after["first.jpg"].state, after["again.jpg"].state} == {FileState.DELETED}
    assert not held(standin, rows["first.jpg"].image_id)

    # The same bytes dropped again later are uploaded again: a deleted row is no original.
    batch = stage(rt, {"third.jpg": data})
    assert rows_by_path(rt)["third.jpg"].state == FileState.QUEUED
    assert upload_batch(rt, batch).uploaded == 1


def test_delete_by_state_and_by_time_found(
    rt: Runtime, clock: Clock, standin: RunningStandin, monkeypatch: pytest.MonkeyPatch
) -> None:
    early = indexed(rt, clock, {"early.jpg": image_bytes(20)})["early.jpg"]
    clock.advance(3600)
    late = indexed(rt, clock, {"late.jpg": image_bytes(21)})["late.jpg"]
    stage(rt, {"waiting.jpg": image_bytes(22)})  # no image yet: never matched

    code, output = delete(monkeypatch, rt, "--since", str(late.seen_at), "--yes")
    assert code == 0, output
    after = rows_by_path(rt)
    assert after["late.jpg"].state == FileState.DELETED
    assert after["early.jpg"].state == FileState.INDEXED and held(standin, early.image_id)

    code, output = delete(monkeypatch, rt, "--state", "indexed", "--until", "1970-01-13", "--yes")
    assert code == 0, output  # 1970-01-13T00:00Z = 1036800 > early's seen_at
    after = rows_by_path(rt)
    assert after["early.jpg"].state == FileState.DELETED
    assert after["waiting.jpg"].state == FileState.QUEUED
    assert len(standin.state.store) == 0


def test_delete_refuses_without_a_filter_or_yes_and_asks_on_a_terminal(
    rt: Runtime, clock: Clock, standin: RunningStandin, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = indexed(rt, clock, {"keep.jpg": image_bytes(30)})
    code, output = delete(monkeypatch, rt)
    assert code == 2, output
    code, output = delete(monkeypatch, rt, "--path", "nothing/*", "--yes")
    assert code == 1 and "nothing matched" in output
    code, output = delete(monkeypatch, rt, "--path", "*")  # not a terminal, no --yes
    assert code == 2 and "--yes" in output

    monkeypatch.setattr(delete_cmd, "_is_terminal", lambda: True)
    code, output = delete(monkeypatch, rt, "--path", "*", answer="n\n")
    assert code == 1 and "nothing deleted" in output
    assert rows_by_path(rt)["keep.jpg"].state == FileState.INDEXED
    assert held(standin, rows["keep.jpg"].image_id)

    code, output = delete(monkeypatch, rt, "--path", "*", answer="y\n")
    assert code == 0, output
    assert rows_by_path(rt)["keep.jpg"].state == FileState.DELETED


def test_an_image_already_gone_is_recorded_deleted(
    rt: Runtime, clock: Clock, standin: RunningStandin, monkeypatch: pytest.MonkeyPatch
) -> None:
    row = indexed(rt, clock, {"gone.jpg": image_bytes(40)})["gone.jpg"]
    rt.client.delete(row.image_id or "")
    code, output = delete(monkeypatch, rt, "--image-id", row.image_id or "", "--yes")
    assert code == 0, output
    assert "1 already gone" in output
    after = rows_by_path(rt)["gone.jpg"]
    assert after.state == FileState.DELETED and "already gone" in (after.message or "")


def test_a_delete_whose_answer_never_came_is_of_unknown_outcome_and_left_for_check(
    rt: Runtime, clock: Clock, standin: RunningStandin
) -> None:
    """A read timeout: the stand-in answers Delete Image only after the client stopped
    waiting, and deletes the image all the same. The real command, in a process of its
    own, says the outcome is unknown and records nothing; `check` then finds it missing."""
    row = indexed(rt, clock, {"slow.jpg": image_bytes(41)})["slow.jpg"]
    assert row.state == FileState.INDEXED and row.image_id
    ingest = rt.settings.ingest
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "REKA_"))} | {
        "PYTHONPATH": str(REPO),
        "INGEST_DATA_DIR": str(ingest.data_dir),
        "INGEST_DATABASE_URL": ingest.ledger_url,
        "INGEST_INBOX": str(ingest.inbox),
        "INGEST_REDIS_URL": ingest.broker_url,
        "INGEST_CHECK_REQUESTS_PER_SECOND": str(FAST),
        "INGEST_LOG_FORMAT": "console",
        "REKA_API_BASE_URL": rt.settings.reka.api_base_url,
        "REKA_API_KEY": KEY,
        "REKA_READ_TIMEOUT": "0.3",
    }
    faults = httpx.post(
        f"{standin.base_url}/_standin/faults", json={"latency": 0.6}, headers=standin.headers
    )
    faults.raise_for_status()
    done = subprocess.run(
        [sys.executable, "-m", "reka_ingest.cli", "delete", "--image-id", row.image_id, "--yes"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert f"outcome unknown {row.image_id}" in done.stdout, done.stdout
    assert "check` settles it" in done.stdout
    assert "not deleted" not in done.stdout
    assert "0 row(s) recorded deleted" in done.stdout
    after = rows_by_path(rt)["slow.jpg"]
    assert (after.state, after.reason, after.message) == (row.state, row.reason, row.message)
    deadline = time.monotonic() + 5
    while held(standin, row.image_id) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not held(standin, row.image_id)  # the server did delete it: "not deleted" was wrong

    httpx.post(
        f"{standin.base_url}/_standin/faults", json={"latency": 0}, headers=standin.headers
    ).raise_for_status()
    checked = subprocess.run(
        [sys.executable, "-m", "reka_ingest.cli", "check", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert checked.returncode == 0, (checked.stdout, checked.stderr)
    assert json.loads(checked.stdout)["missing"] == 1

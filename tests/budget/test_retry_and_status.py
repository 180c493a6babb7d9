"""`reka-ingest retry` and the budget in `reka-ingest status`, through the real
command line: the real stand-in, the real Redis (the broker the command
enqueues to), a real ledger and real files."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

from reka_ingest.cli.main import app
from reka_ingest.core.bundled_redis import free_port
from reka_ingest.core.constants import RATE_LIMIT_WINDOW_SECONDS as DAY
from reka_ingest.core.errors import RateLimitInfo
from reka_ingest.core.queues import UPLOAD_QUEUE
from reka_ingest.core.states import FileState, Reason
from reka_ingest.ledger.queries import list_files
from reka_ingest.ledger.uploads import flag_possible_duplicates
from reka_ingest.standin.runner import RunningStandin
from tests.budget.conftest import KEY, T0, stage_one_per_batch
from tests.support.clock import Clock
from worker.poller import poll_due
from worker.runtime import Runtime
from worker.uploader import upload_batch


def use_env(monkeypatch: pytest.MonkeyPatch, rt: Runtime, **extra: str) -> None:
    """The command reads its settings from the environment, as a user's shell gives them."""
    ingest = rt.settings.ingest
    env = {
        "INGEST_DATA_DIR": str(ingest.data_dir),
        "INGEST_DATABASE_URL": ingest.ledger_url,
        "INGEST_INBOX": str(ingest.inbox),
        "INGEST_REDIS_URL": ingest.broker_url,
        "REKA_API_BASE_URL": rt.settings.reka.api_base_url,
        "INGEST_LOG_FORMAT": "console",
    }
    for name, value in (env | extra).items():
        monkeypatch.setenv(name, value)


def test_files_refused_for_a_wrong_key_are_retried_after_the_key_is_fixed(
    make_runtime: Callable[..., Runtime],
    standin: RunningStandin,
    clock: Clock,
    rclient: redis.Redis[bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wrong = make_runtime(api_key="not-the-key")
    batches = stage_one_per_batch(wrong, 3)
    for batch in batches:
        assert upload_batch(wrong, batch).outcome == "failed"
    rows = list_files(wrong.ledger)
    assert {(r.state, r.reason) for r in rows} == {(FileState.FAILED, Reason.AUTH_FAILED)}
    failed_bytes = [Path((r.final_path or "").removesuffix(".error.json")) for r in rows]
    assert all(p.is_file() for p in failed_bytes)
    failed_bytes[2].unlink()  # one file the user deleted meanwhile: it cannot be retried
    # One file's earlier request may have reached the server: the retry keeps saying so.
    flag_possible_duplicates(wrong.ledger, [rows[0].id], now=clock())

    use_env(monkeypatch, wrong, REKA_API_KEY=KEY)  # the key is fixed
    result = CliRunner().invoke(app, ["retry", "--reason", "auth_failed"])
    assert result.exit_code == 0, result.output
    assert "requeued 2 file(s) in 1 batch(es)" in result.output
    assert "not retried, bytes missing" in result.output and "sub/img2.jpg" in result.output
    assert "not-the-key" not in result.output and KEY not in result.output

    rows = list_files(wrong.ledger)
    queued = [r for r in rows if r.state == FileState.QUEUED]
    assert len(queued) == 2
    assert {r.id: r.possible_duplicate for r in queued} == {rows[0].id: True, rows[1].id: False}
    for r in queued:
        assert (r.reason, r.message, r.final_path) == (None, None, None)
        assert Path(r.work_path).is_relative_to(wrong.settings.ingest.work_dir)
        assert Path(r.work_path).parent.name.startswith("retry-")
    assert not any(p.exists() for p in failed_bytes)  # moved, not copied
    assert not list(wrong.settings.ingest.failed_path.rglob("img[01].jpg.error.json"))
    [batch_id] = {r.batch_id for r in queued}
    assert batch_id is not None and batch_id not in batches
    # The message carries the batch id and nothing else.
    [message] = rclient.lrange(UPLOAD_QUEUE, 0, -1)
    assert json.loads(message)["headers"]["argsrepr"] == f"[{batch_id}]"
    assert KEY.encode() not in message

    # A worker with the fixed key takes the batch: the files end indexed.
    fixed = make_runtime(api_key=KEY)
    report = upload_batch(fixed, batch_id)
    assert (report.outcome, report.uploaded) == ("done", 2)
    clock.now = T0 + 60
    poll_due(fixed)
    states = {Path(r.path).name: r.state for r in list_files(fixed.ledger)}
    assert states["img0.jpg"] in (FileState.INDEXING, FileState.INDEXED)
    assert states == {
        "img0.jpg": states["img0.jpg"],
        "img1.jpg": states["img0.jpg"],
        "img2.jpg": FileState.FAILED,
    }
    # Running it again finds nothing more to do.
    again = CliRunner().invoke(app, ["retry", "--reason", "auth_failed"])
    assert "requeued 0 file(s)" in again.output
    # ... and says so with its exit status: nothing was requeued, and why.
    assert again.exit_code == 1
    assert "nothing requeued; the matching files cannot be retried" in again.output


def test_status_shows_the_budget_and_survives_redis_down(
    make_runtime: Callable[..., Runtime],
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock.now = time.time()  # the command reads the real clock
    first = clock.now
    rt = make_runtime(api_key=KEY, uploads_per_day=100)
    use_env(monkeypatch, rt, REKA_API_KEY=KEY, INGEST_UPLOADS_PER_DAY="100")
    for batch in stage_one_per_batch(rt, 2):
        assert upload_batch(rt, batch).outcome == "done"
    rt.budget.follow(RateLimitInfo(retry_after_seconds=3600), rate_limited=True)
    result = CliRunner().invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    budget = json.loads(result.output)["budget"]
    assert {k: budget[k] for k in ("limit", "used", "remaining", "refills_at", "error")} == {
        "limit": 100,
        "used": 2,
        "remaining": 98,
        "refills_at": first + DAY,
        "error": None,
    }
    assert budget["paused_until"] == pytest.approx(clock.now + 3600)
    assert budget["summary"] == "98 of 100 upload requests left"
    text = CliRunner().invoke(app, ["status"]).output
    assert "API budget: 98 of 100 upload requests left; 2 used in the last 24 h; next slot" in text
    assert "; paused by the API for " in text
    # A shell that sets no budget at all reads the same: the rule comes from Redis.
    monkeypatch.delenv("INGEST_UPLOADS_PER_DAY")
    monkeypatch.delenv("REKA_API_KEY")
    assert json.loads(CliRunner().invoke(app, ["status", "--json"]).stdout)["budget"][
        "summary"
    ] == ("98 of 100 upload requests left")

    monkeypatch.setenv("INGEST_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    down = CliRunner().invoke(app, ["status", "--json"])
    assert down.exit_code == 0, down.output
    data = json.loads(down.output)
    assert data["total"] == 2
    assert data["budget"]["remaining"] is None and "did not answer" in data["budget"]["error"]
    text = CliRunner().invoke(app, ["status"]).output
    assert "API budget: unknown (Redis did not answer (ConnectionError))" in text

"""The periodic server check: the task function called without Celery against the
real stand-in, a real Redis and a real ledger (each database); what it stores
in Redis read back by the metrics, `status`, `status --json` and the live view;
beat schedules it only when its interval is set."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis
from prometheus_client import generate_latest
from rich.console import Console
from typer.testing import CliRunner

from reka_ingest.cli.main import app
from reka_ingest.cli.watch_status import render, take_snapshot
from reka_ingest.core.bundled_redis import free_port
from reka_ingest.core.queues import CONTROL_QUEUE, TASK_SERVER_CHECK
from reka_ingest.core.settings import Settings
from reka_ingest.core.states import FileState
from reka_ingest.ledger import Ledger, open_ledger
from reka_ingest.ledger.queries import list_files
from reka_ingest.ledger.schema import File
from reka_ingest.metrics.collector import IngestCollector, build_registry
from reka_ingest.metrics.counters import redis_client
from reka_ingest.metrics.server_check import (
    SERVER_CHECK_KEY,
    SERVER_CHECK_LOCK_KEY,
    ServerCheck,
    describe,
    read_server_check,
    record_check,
    record_failure,
)
from reka_ingest.standin.config import StandinConfig
from reka_ingest.standin.runner import RunningStandin, serve_in_thread
from scheduler.beat import beat_schedule
from tests.metrics.support import samples, value
from tests.support.images import image_bytes
from worker.celery_app import create_app
from worker.runtime import Runtime
from worker.tasks import server_check

KEY = "test-key-server-check"
NOW = 80_000.0
COUNTS = {
    "images_on_server": 40,
    "rows_checked": 38,
    "orphans": 3,
    "in_flight": 0,
    "missing": 0,
    "drift": 1,
    "duplicates_settled": 2,
    "duplicates_unsettled": 0,
    "requests": 5,
}


@pytest.fixture
def rclient(redis_url: str) -> Iterator[redis.Redis[bytes]]:
    client = redis_client(redis_url)
    yield client
    client.close()


@pytest.fixture
def standin() -> Iterator[RunningStandin]:
    with serve_in_thread(StandinConfig(api_keys=(KEY,), port=0, seed=1)) as server:
        yield server


@pytest.fixture
def make_rt(
    make_settings: Callable[..., Settings], redis_url: str, database_url: str
) -> Iterator[Callable[..., Runtime]]:
    made: list[Runtime] = []

    def make(base_url: str, key: str = KEY) -> Runtime:
        settings = make_settings(api_key=key, api_base_url=base_url, redis_url=redis_url)
        rt = Runtime(settings, open_ledger(settings.ingest.ledger_url))
        made.append(rt)
        return rt

    yield make
    for rt in made:
        rt.close()


def upload(base_url: str, seeds: list[int]) -> list[dict[str, Any]]:
    """Images straight to the stand-in (as an upload whose answer was lost would)."""
    data = [image_bytes(seed, size=(20, 16)) for seed in seeds]
    metadata = {"requests": [{"indexing_config": {"index": True}, "metadata": {}} for _ in data]}
    r = httpx.post(
        f"{base_url}/v1/images/upload",
        headers={"X-Api-Key": KEY},
        data={"metadata": json.dumps(metadata)},
        files=[("images", (f"{s}.jpg", d, "image/jpeg")) for s, d in zip(seeds, data, strict=True)],
        timeout=10,
    )
    r.raise_for_status()
    results: list[dict[str, Any]] = r.json()["results"]
    for image, blob in zip(results, data, strict=True):
        image["sha256"] = hashlib.sha256(blob).hexdigest()
    return results


def record_indexed(ledger: Ledger, n: int, image: dict[str, Any]) -> None:
    """A row the ledger calls indexed, owning `image`."""
    with ledger.write() as s:
        s.add(
            File(
                path=f"f{n}.jpg",
                source_root="/inbox",
                work_path=f"/work/f{n}.jpg",
                origin="event",
                size=100,
                mtime=0.0,
                sha256=image["sha256"],
                state=FileState.INDEXED,
                image_id=image["image_id"],
                image_url=image["image_url"],
                indexing_status=2,
                upload_timestamp=image["upload_timestamp"],
                seen_at=time.time() - 60,
                uploaded_at=time.time() - 50,
                indexed_at=time.time() - 40,
                finished_at=time.time() - 40,
                updated_at=time.time() - 40,
            )
        )


def page(
    ledger: Ledger, client: redis.Redis[bytes]
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    collector = IngestCollector(ledger, client, clock=lambda: NOW)
    return samples(generate_latest(build_registry(collector)).decode())


# --- the task function, without Celery -------------------------------------------------


def test_the_task_stores_its_counts_and_changes_nothing(
    make_rt: Callable[..., Runtime], standin: RunningStandin, rclient: redis.Redis[bytes]
) -> None:
    rt = make_rt(standin.base_url)
    kept, gone, orphan = upload(standin.base_url, [1, 2, 3])
    record_indexed(rt.ledger, 1, kept)
    record_indexed(rt.ledger, 2, gone)
    httpx.post(
        f"{standin.base_url}/_standin/images/{gone['image_id']}/expire",
        headers={"X-Api-Key": KEY},
        timeout=10,
    ).raise_for_status()

    before = time.time()
    report = server_check(rt, rclient)
    assert report is not None
    assert (report.orphans, report.missing) == (1, 1), report
    check = read_server_check(rclient)
    assert check is not None and check.at is not None
    assert before <= check.at <= time.time()
    assert check.counts["orphans"] == 1 and check.counts["missing"] == 1
    assert check.counts["images_on_server"] == 2
    assert check.counts["requests"] == report.requests > 0
    assert check.error is None and not check.failed_last()
    # Read only: the rows are as they were, the orphan is still on the server.
    assert {f.state for f in list_files(rt.ledger)} == {FileState.INDEXED}
    listed = httpx.get(
        f"{standin.base_url}/v1/images", headers={"X-Api-Key": KEY}, timeout=10
    ).json()["results"]
    assert {i["image_id"] for i in listed} == {kept["image_id"], orphan["image_id"]}
    assert rclient.get(SERVER_CHECK_LOCK_KEY) is None  # released

    # The metrics and the one-line summary read what it stored.
    p = page(rt.ledger, rclient)
    assert value(p, "reka_ingest_server_orphans") == 1
    assert value(p, "reka_ingest_server_missing") == 1
    assert value(p, "reka_ingest_server_images") == 2
    assert value(p, "reka_ingest_server_check_last_failed") == 0
    assert describe(check, check.at + 720).startswith("1 orphans, 1 missing")
    assert describe(check, check.at + 720).endswith(", 12 min ago")


def test_a_check_already_running_is_not_doubled(
    make_rt: Callable[..., Runtime], standin: RunningStandin, rclient: redis.Redis[bytes]
) -> None:
    rt = make_rt(standin.base_url)
    rclient.set(SERVER_CHECK_LOCK_KEY, "someone-else", ex=60)
    assert server_check(rt, rclient) is None
    assert rclient.get(SERVER_CHECK_KEY) is None
    assert rclient.get(SERVER_CHECK_LOCK_KEY) == b"someone-else"  # not ours to release


def test_a_failed_check_is_noted_and_keeps_the_last_counts(
    make_rt: Callable[..., Runtime], standin: RunningStandin, rclient: redis.Redis[bytes]
) -> None:
    rt = make_rt(standin.base_url, key="a-wrong-key")  # 401: fails at once, no retries
    record_check(rclient, COUNTS, at=NOW, seconds=1.5)
    assert server_check(rt, rclient) is None  # raises nothing: the next interval retries
    check = read_server_check(rclient)
    assert check is not None
    assert check.at == NOW and check.counts == COUNTS  # the last good counts stay
    assert check.error and check.failed_last()
    assert "last attempt failed" in describe(check, time.time())
    assert rclient.get(SERVER_CHECK_LOCK_KEY) is None


# --- the readers: metrics, status, the live view --------------------------------------


def test_the_gauges_read_the_stored_check(ledger: Ledger, rclient: redis.Redis[bytes]) -> None:
    assert not any(name.startswith("reka_ingest_server") for name, _ in page(ledger, rclient))
    record_check(rclient, COUNTS, at=NOW - 720, seconds=4.25)
    p = page(ledger, rclient)
    assert value(p, "reka_ingest_server_orphans") == 3
    assert value(p, "reka_ingest_server_missing") == 0
    assert value(p, "reka_ingest_server_drift") == 1
    assert value(p, "reka_ingest_server_duplicates_unsettled") == 0
    assert value(p, "reka_ingest_server_images") == 40
    assert value(p, "reka_ingest_server_check_age_seconds") == 720
    assert value(p, "reka_ingest_server_check_duration_seconds") == 4.25
    assert value(p, "reka_ingest_server_check_last_failed") == 0
    record_failure(rclient, "ApiUnavailable: connection refused", at=NOW - 10)
    p = page(ledger, rclient)
    assert value(p, "reka_ingest_server_check_last_failed") == 1
    assert value(p, "reka_ingest_server_orphans") == 3  # the last good counts
    rclient.set(SERVER_CHECK_KEY, b"not json")
    assert not any(name.startswith("reka_ingest_server") for name, _ in page(ledger, rclient))
    assert value(page(ledger, rclient), "reka_ingest_up", part="redis") == 1


def test_status_and_status_json_show_the_check(
    make_settings: Callable[..., Settings],
    redis_url: str,
    rclient: redis.Redis[bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ingest = make_settings(redis_url=redis_url).ingest
    open_ledger(ingest.ledger_url).dispose()
    for name, val in {
        "INGEST_DATA_DIR": str(ingest.data_dir),
        "INGEST_DATABASE_URL": ingest.ledger_url,
        "INGEST_REDIS_URL": redis_url,
        "INGEST_LOG_FORMAT": "console",
    }.items():
        monkeypatch.setenv(name, val)

    never = CliRunner().invoke(app, ["status", "--json"])
    assert never.exit_code == 0, never.output
    assert json.loads(never.output)["server_check"] is None
    text = CliRunner().invoke(app, ["status"]).output
    assert "server check: never run (the periodic check is off" in text

    at = time.time() - 12 * 60 - 5
    record_check(rclient, COUNTS | {"drift": 0}, at=at, seconds=2.0)
    data = json.loads(CliRunner().invoke(app, ["status", "--json"]).output)["server_check"]
    assert data["at"] == at and 12 * 60 <= data["age_seconds"] < 13 * 60
    assert (data["orphans"], data["missing"], data["images_on_server"]) == (3, 0, 40)
    assert data["error"] is None
    text = CliRunner().invoke(app, ["status"]).output
    assert "server check: 3 orphans, 0 missing, 12 min ago" in text

    monkeypatch.setenv("INGEST_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    down = CliRunner().invoke(app, ["status", "--json"])
    assert down.exit_code == 0, down.output
    assert "unreadable" in json.loads(down.output)["server_check"]
    assert "server check: unknown, Redis did not answer" in (
        CliRunner().invoke(app, ["status"]).output
    )


def test_the_live_view_shows_the_check(ledger: Ledger, rclient: redis.Redis[bytes]) -> None:
    def row(client: redis.Redis[bytes] | None) -> str:
        """The view's `server check` row, its label and padding taken off."""
        console = Console(record=True, width=140, color_system=None)
        console.print(render(take_snapshot(ledger, client, now=NOW)))
        line = next(x for x in console.export_text().splitlines() if "server check" in x)
        return line.split("server check", 1)[1].strip(" │")

    assert row(rclient) == "never run"
    record_check(rclient, COUNTS, at=NOW - 3 * 3600 - 300, seconds=2.0)
    assert row(rclient) == "3 orphans, 0 missing, 1 drifted, 3 h 05 min ago"
    assert row(None) == "unknown (Redis did not answer)"


def test_describe_says_what_it_knows() -> None:
    assert describe(None, NOW) == "never run"
    only_failed = ServerCheck(at=None, seconds=None, error="boom", error_at=NOW - 30)
    assert describe(only_failed, NOW) == "never finished; last attempt failed 30 s ago: boom"


# --- beat and the worker --------------------------------------------------------------


def test_beat_schedules_the_check_only_when_its_interval_is_set(
    make_settings: Callable[..., Settings],
) -> None:
    off = beat_schedule(make_settings().ingest)
    assert TASK_SERVER_CHECK not in {e["task"] for e in off.values()}
    on = beat_schedule(make_settings(server_check_interval=900).ingest)
    entry = on["server-check"]
    assert entry["task"] == TASK_SERVER_CHECK
    assert entry["schedule"] == 900
    assert entry["options"] == {"queue": CONTROL_QUEUE, "expires": 900}
    assert TASK_SERVER_CHECK in create_app(make_settings()).tasks

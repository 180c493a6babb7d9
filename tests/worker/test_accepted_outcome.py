"""An upload the server accepted is never sent again because of our own database.

Real parts throughout: the stand-in on loopback (it counts what it stored),
the real Redis (where an outcome the ledger cannot take is parked), a real
SQLite file and a real PostgreSQL server (stopped and started for the
outages, a trigger for a data error that repeats). The outage starts at
exactly the moment the stand-in's 200 reaches the client (its response
observer), the worst moment: the images are on the server, the ledger knows
nothing yet.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import event, select, text

from reka_ingest.core.states import BatchOutcome, BatchState, FileState, Reason
from reka_ingest.ledger import Ledger
from reka_ingest.ledger.queries import list_files
from reka_ingest.ledger.schema import Batch
from reka_ingest.reka.client import RekaClient
from reka_ingest.standin.runner import RunningStandin
from tests.support.clock import Clock
from tests.support.images import image_bytes
from tests.support.postgres import PostgresCluster
from tests.worker.conftest import KEY, stage
from worker import parked
from worker.poller import poll_due
from worker.runtime import Runtime
from worker.tasks import sweep_batches
from worker.uploader import upload_batch

N = 4


# --- helpers ------------------------------------------------------------------------


def blobs(seed: int) -> dict[str, bytes]:
    return {f"cam/{seed}-{i}.jpg": image_bytes(seed + i) for i in range(N)}


def copies_on_server(standin: RunningStandin) -> Counter[str]:
    """sha256 -> how many images the stand-in holds with those bytes."""
    held: Counter[str] = Counter()
    with httpx.Client(base_url=standin.base_url, headers={"X-Api-Key": KEY}) as client:
        offset = 0
        while True:
            page = client.get("/v1/images", params={"limit": 100, "offset": offset}).json()
            results = page["results"] if isinstance(page, dict) else page
            for image in results:
                detail = client.get(f"/_standin/images/{image['image_id']}").json()
                held[detail["sha256"]] += 1
            if len(results) < 100:
                return held
            offset += 100


def image_ids_by_sha256(standin: RunningStandin) -> dict[str, str]:
    """sha256 -> image id of each image the stand-in holds (one copy each expected)."""
    out: dict[str, str] = {}
    with httpx.Client(base_url=standin.base_url, headers={"X-Api-Key": KEY}) as client:
        listed = client.get("/v1/images", params={"limit": 100}).json()
        for image in listed["results"] if isinstance(listed, dict) else listed:
            detail = client.get(f"/_standin/images/{image['image_id']}").json()
            out[detail["sha256"]] = image["image_id"]
    return out


def uploads_accepted(standin: RunningStandin) -> int:
    r = httpx.get(f"{standin.base_url}/_standin/stats", headers={"X-Api-Key": KEY})
    return int(r.json()["uploads_accepted"])


def on_accepted_upload(action: Callable[[], None]) -> Callable[[str, str, int], None]:
    """A response observer that runs `action` once, when an upload's 200 arrives."""
    fired: list[bool] = []

    def observe(method: str, path: str, status: int) -> None:
        if method == "POST" and path.endswith("/images/upload") and status == 200 and not fired:
            fired.append(True)
            action()

    return observe


def with_observer(rt: Runtime, observe: Callable[[str, str, int], None]) -> Runtime:
    """The same runtime, its Reka client telling `observe` of each response."""
    client = RekaClient.from_settings(rt.settings.reka, on_response=observe)
    return dataclasses.replace(rt, _client=client)


def batch_row(ledger: Ledger, batch_id: int) -> Batch:
    with ledger.read() as s:
        return s.execute(select(Batch).where(Batch.id == batch_id)).scalar_one()


def parked_json(rt: Runtime) -> dict[int, dict[str, object]]:
    """What Redis holds as parked outcomes, by batch id."""
    client = redis.Redis.from_url(rt.settings.ingest.broker_url)
    try:
        raw = client.hgetall(parked.PARKED_KEY)
    finally:
        client.close()
    return {int(k): json.loads(v) for k, v in raw.items()}


def assert_indexed_once(
    rt: Runtime, clock: Clock, standin: RunningStandin, data: dict[str, bytes]
) -> None:
    """Every file indexed (after the poll), and the server holds one copy of each."""
    clock.advance(10)
    poll_due(rt)
    rows = {f.path: f for f in list_files(rt.ledger)}
    assert {p: r.state for p, r in rows.items()} == dict.fromkeys(data, FileState.INDEXED)
    assert not any(r.possible_duplicate for r in rows.values())
    held = copies_on_server(standin)
    assert {rows[p].sha256: held[rows[p].sha256 or ""] for p in data} == {
        rows[p].sha256: 1 for p in data
    }
    assert uploads_accepted(standin) == 1
    for r in rows.values():
        assert Path(r.final_path or "").is_relative_to(rt.settings.ingest.done_path)


def ledger_outage(
    request: pytest.FixtureRequest, ledger: Ledger
) -> tuple[Callable[[], None], Callable[[], None]]:
    """(go down, come back) for the test's ledger: PostgreSQL stopped and started;
    SQLite write-locked by another connection (its writers wait 50 ms, not 30 s, so
    the lock is an outage at once, as a long one is in production)."""
    down = threading.Event()
    if ledger.is_sqlite:
        path = ledger.url.removeprefix("sqlite:///")
        holder: list[sqlite3.Connection] = []

        def short_wait(dbapi_conn: sqlite3.Connection, _record: object) -> None:
            dbapi_conn.execute("PRAGMA busy_timeout=50")

        event.listen(ledger.engine, "connect", short_wait)
        ledger.engine.dispose()

        def lock() -> None:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            conn.execute("BEGIN IMMEDIATE")
            holder.append(conn)
            down.set()

        def unlock() -> None:
            while holder:
                conn = holder.pop()
                conn.execute("ROLLBACK")
                conn.close()
            down.clear()

        request.addfinalizer(unlock)
        return lock, unlock
    cluster: PostgresCluster = request.getfixturevalue("postgres")

    def stop() -> None:
        cluster.stop()
        down.set()

    def start() -> None:
        if down.is_set():
            cluster.start()
            down.clear()

    request.addfinalizer(start)  # never leave the session's server down
    return stop, start


# --- (a) a passing outage right after the 200 -----------------------------------------


@pytest.mark.usefixtures("database_url")
@pytest.mark.timeout(60)
def test_a_ledger_outage_right_after_the_server_accepted_is_ridden_out(
    make_rt: Callable[..., Runtime],
    standin: RunningStandin,
    clock: Clock,
    request: pytest.FixtureRequest,
) -> None:
    """PostgreSQL stopped at the 200 and started 0.2 s later (a restart: every pooled
    connection broken); SQLite write-locked by another process for 0.2 s."""
    base = make_rt()
    go_down, come_back = ledger_outage(request, base.ledger)
    down: list[str] = []
    timers: list[threading.Timer] = []

    def outage() -> None:
        go_down()
        down.append("down")
        timers.append(threading.Timer(0.2, come_back))
        timers[-1].start()

    rt = with_observer(base, on_accepted_upload(outage))
    request.addfinalizer(rt.client.close)
    data = blobs(100)
    batch = stage(rt, data)
    try:
        report = upload_batch(rt, batch)
    finally:
        for timer in timers:
            timer.join(30)
    assert down == ["down"], "the outage did not happen at the accepted upload"
    assert (report.outcome, report.uploaded, report.failed) == (BatchOutcome.DONE, N, 0)
    # Done now, on the test's clock: no lease ran out, nothing was parked.
    assert batch_row(rt.ledger, batch).state == BatchState.DONE
    assert parked_json(rt) == {}
    assert_indexed_once(rt, clock, standin, data)


# --- (b) an outage longer than the retry window: parked, then applied -----------------


@pytest.mark.parametrize("applied_by", ["sweep", "claim"])
@pytest.mark.usefixtures("database_url")
@pytest.mark.timeout(60)
def test_an_outcome_parked_through_a_long_outage_is_applied_without_a_second_upload(
    make_rt: Callable[..., Runtime],
    standin: RunningStandin,
    clock: Clock,
    request: pytest.FixtureRequest,
    applied_by: str,
) -> None:
    base = make_rt(ledger_retry_seconds=0.3)
    go_down, come_back = ledger_outage(request, base.ledger)
    rt = with_observer(base, on_accepted_upload(go_down))
    request.addfinalizer(rt.client.close)
    data = blobs(200)
    batch = stage(rt, data)

    report = upload_batch(rt, batch)  # the ledger stays down past the 0.3 s window
    assert report.outcome == BatchOutcome.DEFERRED and report.uploaded == N
    assert "did not take the outcome" in (report.error or "")
    [(parked_batch, outcome)] = parked_json(rt).items()
    assert parked_batch == batch and outcome["request_id"] == report.request_id
    files = outcome["files"]
    assert isinstance(files, list) and len(files) == N and all(f["image_id"] for f in files)
    assert KEY not in json.dumps(outcome)  # ids, paths and answers; never the API key

    come_back()
    sent: list[int] = []
    if applied_by == "sweep":
        assert sweep_batches(rt, sent.append) == []
    else:
        again = upload_batch(rt, batch)
        assert (again.outcome, again.uploaded) == (BatchOutcome.DONE, N)
    assert sent == [] and parked_json(rt) == {}
    assert batch_row(rt.ledger, batch).state == BatchState.DONE
    # A lease running out later changes nothing: the batch is done.
    clock.advance(rt.settings.ingest.batch_lease + 1)
    assert sweep_batches(rt, sent.append) == [] and sent == []
    assert upload_batch(rt, batch).outcome == BatchOutcome.SKIPPED
    assert_indexed_once(rt, clock, standin, data)


# --- (c) a data error that repeats: bounded, failed with a readable message ------------

_SQLITE_REFUSE = """
CREATE TRIGGER refuse_image_id BEFORE UPDATE OF image_id ON files
WHEN NEW.image_id IS NOT NULL AND OLD.image_id IS NULL
BEGIN SELECT RAISE(ABORT, 'value too long for type character varying(128)'); END
"""
_PG_REFUSE = (
    """
CREATE FUNCTION refuse_image_id() RETURNS trigger AS $$
BEGIN
  IF NEW.image_id IS NOT NULL AND OLD.image_id IS NULL THEN
    RAISE EXCEPTION 'value too long for type character varying(128)' USING ERRCODE = '22001';
  END IF;
  RETURN NEW;
END $$ LANGUAGE plpgsql
""",
    "CREATE TRIGGER refuse_image_id BEFORE UPDATE ON files"
    " FOR EACH ROW EXECUTE FUNCTION refuse_image_id()",
)


def refuse_image_ids(ledger: Ledger) -> None:
    """The ledger refuses every upload result (a real data error from the database)."""
    with ledger.engine.begin() as conn:
        for statement in (_SQLITE_REFUSE,) if ledger.is_sqlite else _PG_REFUSE:
            conn.execute(text(statement))


@pytest.mark.usefixtures("database_url")
@pytest.mark.timeout(60)
def test_a_repeating_data_error_fails_the_files_after_the_attempts_with_their_image_ids(
    make_rt: Callable[..., Runtime], standin: RunningStandin, clock: Clock
) -> None:
    rt = make_rt(upload_max_retries=2, retry_backoff_base=1.0, retry_backoff_max=2.0)
    refuse_image_ids(rt.ledger)
    data = blobs(300)
    batch = stage(rt, data)

    report = upload_batch(rt, batch)
    assert report.outcome == BatchOutcome.DEFERRED  # parked: a data error is not retried here
    assert batch in parked_json(rt)
    sent: list[int] = []
    sweeps = 0
    while batch in parked_json(rt):
        sweeps += 1
        assert sweeps <= 10, "the parked outcome loops"
        clock.advance(5)
        sweep_batches(rt, sent.append)
    # Attempts: the upload's (its answer refused once), then one sweep's refused recording.
    assert sent == [] and sweeps == 1

    rows = {f.path: f for f in list_files(rt.ledger)}
    assert {r.state for r in rows.values()} == {FileState.FAILED}
    assert {r.reason for r in rows.values()} == {Reason.RECORD_FAILED}
    image_of = image_ids_by_sha256(standin)
    for r in rows.values():
        image_id = image_of[r.sha256 or ""]
        message = r.message or ""
        assert f"the server stored it as image {image_id}" in message, message
        assert "refused that answer 2 times (3 attempts in all)" in message
        assert "value too long" in message and "second copy" in message
        record = json.loads(
            (rt.settings.ingest.failed_path / f"{r.path}.error.json").read_text(encoding="utf-8")
        )
        assert record["reason"] == "record_failed" and record["image_id"] == image_id
    b = batch_row(rt.ledger, batch)
    assert (b.state, b.attempts) == (BatchState.DONE, 3)

    # Nothing takes it again: not a claim, not a sweep after the lease.
    assert upload_batch(rt, batch).outcome == BatchOutcome.SKIPPED
    clock.advance(rt.settings.ingest.batch_lease + 1)
    sweep_batches(rt, sent.append)
    assert sent == []
    assert uploads_accepted(standin) == 1
    assert sorted(copies_on_server(standin).values()) == [1] * N

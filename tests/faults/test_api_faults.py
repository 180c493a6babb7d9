"""The stand-in answering 30% of its /v1 requests with 500, dropping 5% of its
connections, and starting bursts of 429s, while files keep coming.

Drops alternate between `before` (nothing stored: a plain network failure) and
`after` (the images were stored, but the client never learns their ids) every
second, so both happen to uploads and to indexing polls. A client cannot tell
the two apart, so a batch sent again after a dropped answer must flag its files
`possible_duplicate`: every file the server stored twice must be flagged.

Each file ends indexed, or failed with a reason a person can read if its
retries ran out; none is lost.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reka_ingest.core.states import FileState, Reason
from tests.faults.support import (
    FAULT_ENV,
    STANDIN_ENV,
    assert_nothing_lost,
    assert_settled,
    audit,
    check_fix,
    drop_files,
    file_names,
    report,
)
from tests.support.service import Service

pytestmark = [pytest.mark.slow]

N = 120
FAULTS = {
    "fail_share": 0.30,
    "drop_share": 0.05,
    "drop_when": "before",
    "burst_429_share": 0.05,
    "burst_429_length": 3,
    "burst_429_retry_after": 1,
}


@pytest.fixture
def service(tmp_path: Path, redis_url: str, database_url: str) -> Iterator[Service]:
    svc = Service(
        tmp_path,
        redis_url,
        # Few retries, so some batches run out of them (4 attempts, ~2% of batches).
        env={
            **FAULT_ENV,
            "INGEST_DATABASE_URL": database_url,
            "INGEST_BATCH_MAX_FILES": "5",
            "INGEST_UPLOAD_MAX_RETRIES": "3",
        },
        standin_env=STANDIN_ENV,
    )
    try:
        yield svc
    finally:
        svc.stop()


def alternate_drops(svc: Service, stop: threading.Event) -> threading.Thread:
    """Flip `drop_when` between before and after every second, until `stop`."""

    def run() -> None:
        when = "before"
        while not stop.wait(1.0):
            when = "after" if when == "before" else "before"
            svc.standin_post("/_standin/faults", {"drop_when": when})

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


# On SQLite alone: the faults are the API's, not the ledger's. What the ledger does
# with them (a batch sent again, its files flagged, `check --fix` settling them) is
# tested on both ledgers in tests/worker and tests/serverside, and PostgreSQL under
# faults of its own in test_postgres_drill.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.timeout(150)
def test_a_faulty_api_loses_nothing_and_flags_what_went_twice(
    service: Service, results_file: Path
) -> None:
    svc = service.start()
    started = time.monotonic()
    svc.standin_post("/_standin/faults", FAULTS)
    stop = threading.Event()
    flipper = alternate_drops(svc, stop)
    try:
        dropped = drop_files(svc.inbox, file_names(N // 2, "faulty-a"), seed=43_000)
        time.sleep(2.0)  # a second wave while the first is being retried
        dropped += drop_files(svc.inbox, file_names(N - N // 2, "faulty-b"), seed=44_000)
        svc.wait_terminal(N, timeout=100)
    finally:
        stop.set()
        flipper.join(5)

    a = audit(svc, "API 500/drop/429", dropped, started)
    stats = a.tally.detail["standin"]
    upload = stats["requests"]["upload"]
    # Uploads the server stored but whose answer it dropped (drop_when=after).
    a.tally.detail["uploads_stored_unanswered"] = stats["uploads_accepted"] - upload.get("200", 0)
    check_fix(svc, a)
    report(a.tally, results_file)
    assert_nothing_lost(a, svc)
    assert_settled(a, svc)
    requests = stats["requests"]
    # The faults happened, to uploads in particular.
    assert requests["upload"].get("500", 0) > 0, requests
    assert requests["upload"].get("429", 0) > 0 or requests["get"].get("429", 0) > 0, requests
    assert stats["connections_dropped"] > 0, stats
    states = a.tally.states
    assert set(states) <= {FileState.INDEXED, FileState.FAILED}, states
    for row in svc.files():
        if row.state == FileState.FAILED:  # retries ran out: said so, in words
            assert row.reason == Reason.UPLOAD_FAILED, (row.path, row.reason, row.message)
            assert (row.message or "").startswith("gave up after 4 attempts"), row.message

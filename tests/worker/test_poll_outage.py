"""A poll round's results survive a passing ledger outage: the rows it took are
written when the ledger is back, not left leased to it until the lease ends.

Real parts: the stand-in on loopback, real Redis, a real SQLite file and a real
PostgreSQL server, stopped at the moment the stand-in's answer to a poll
arrives (the round has its answers; the ledger is gone) and started 0.2 s later.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from reka_ingest.core.states import FileState
from reka_ingest.ledger.queries import list_files
from reka_ingest.standin.runner import RunningStandin
from tests.support.clock import Clock
from tests.worker.conftest import stage
from tests.worker.test_accepted_outcome import N, blobs, ledger_outage, with_observer
from worker.poller import poll_due
from worker.runtime import Runtime
from worker.uploader import upload_batch


def on_first_poll_answer(action: Callable[[], None]) -> Callable[[str, str, int], None]:
    fired: list[bool] = []

    def observe(method: str, path: str, status: int) -> None:
        if method == "GET" and "/images" in path and status == 200 and not fired:
            fired.append(True)
            action()

    return observe


@pytest.mark.usefixtures("database_url")
@pytest.mark.timeout(60)
def test_a_ledger_outage_during_a_poll_round_is_ridden_out(
    make_rt: Callable[..., Runtime],
    standin: RunningStandin,
    clock: Clock,
    request: pytest.FixtureRequest,
) -> None:
    base = make_rt()
    data = blobs(300)
    assert upload_batch(base, stage(base, data)).uploaded == N
    assert {f.state for f in list_files(base.ledger)} == {FileState.INDEXING}
    go_down, come_back = ledger_outage(request, base.ledger)
    timers: list[threading.Timer] = []

    def outage() -> None:
        go_down()
        timers.append(threading.Timer(0.2, come_back))
        timers[-1].start()

    rt = with_observer(base, on_first_poll_answer(outage))
    request.addfinalizer(rt.client.close)
    clock.advance(10)  # indexed at the stand-in, and due here
    try:
        report = poll_due(rt)
    finally:
        for timer in timers:
            timer.join(30)
    assert timers, "the outage did not happen during the poll round"
    assert (report.polled, report.indexed) == (N, N)
    assert {f.state for f in list_files(rt.ledger)} == {FileState.INDEXED}

"""The indexing poll reads many statuses from List Images where that takes fewer
requests than a Get per row (worker.poll_list), and asks Get Image for every row
a listing does not show; a round with few rows due keeps to Get Image.

Real parts: the stand-in on loopback, real Redis, SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from reka_ingest.core.states import FileState, Reason
from reka_ingest.ledger.queries import list_files
from reka_ingest.standin.runner import RunningStandin
from tests.support.clock import Clock
from tests.support.images import image_bytes
from tests.worker.conftest import KEY, stage
from tests.worker.test_accepted_outcome import with_observer
from worker.poll_list import pages_for
from worker.poller import poll_due
from worker.runtime import Runtime
from worker.uploader import upload_batch


def _uploaded(make_rt: Callable[..., Runtime], n: int, seed: int) -> Runtime:
    rt = make_rt()
    data = {f"cam/{seed}-{i}.jpg": image_bytes(seed + i) for i in range(n)}
    assert upload_batch(rt, stage(rt, data)).uploaded == n
    return rt


def _polled(rt: Runtime, clock: Clock, request: pytest.FixtureRequest) -> list[tuple[str, str]]:
    """One sweep, due now; the (method, path) of each API response it had."""
    seen: list[tuple[str, str]] = []
    observed = with_observer(rt, lambda method, path, _status: seen.append((method, path)))
    request.addfinalizer(observed.client.close)
    clock.advance(10)  # indexed at the stand-in, and due here
    poll_due(observed)
    return seen


def _gets(seen: list[tuple[str, str]]) -> int:
    return sum(1 for method, path in seen if method == "GET" and "/images/" in path)


@pytest.mark.usefixtures("database_url")
def test_many_rows_due_are_read_from_one_listing(
    make_rt: Callable[..., Runtime], clock: Clock, request: pytest.FixtureRequest
) -> None:
    rt = _uploaded(make_rt, 6, seed=500)
    seen = _polled(rt, clock, request)
    assert seen == [("GET", "/v1/images")]  # one page instead of six Gets
    assert {f.state for f in list_files(rt.ledger)} == {FileState.INDEXED}
    assert all(f.image_url for f in list_files(rt.ledger))


@pytest.mark.usefixtures("database_url")
def test_a_row_the_listing_does_not_show_is_asked_for_by_itself(
    make_rt: Callable[..., Runtime],
    standin: RunningStandin,
    clock: Clock,
    request: pytest.FixtureRequest,
) -> None:
    rt = _uploaded(make_rt, 6, seed=600)
    gone = list_files(rt.ledger)[0]
    assert gone.image_id
    response = httpx.delete(
        f"{standin.base_url}/v1/images/{gone.image_id}", headers={"X-Api-Key": KEY}
    )
    response.raise_for_status()
    seen = _polled(rt, clock, request)
    assert _gets(seen) == 1  # the one the listing did not show: a 404, so it failed
    rows = {f.id: f for f in list_files(rt.ledger)}
    assert rows[gone.id].state == FileState.FAILED
    assert rows[gone.id].reason == Reason.INDEXING_FAILED
    assert {f.state for i, f in rows.items() if i != gone.id} == {FileState.INDEXED}


@pytest.mark.usefixtures("database_url")
def test_few_rows_due_keep_to_get_image(
    make_rt: Callable[..., Runtime], clock: Clock, request: pytest.FixtureRequest
) -> None:
    rt = _uploaded(make_rt, 2, seed=700)  # two Gets are no more than a listing's two pages
    seen = _polled(rt, clock, request)
    assert _gets(seen) == 2
    assert ("GET", "/v1/images") not in seen
    assert {f.state for f in list_files(rt.ledger)} == {FileState.INDEXED}


def test_pages_cover_every_image_the_ledger_uploaded_and_one_more() -> None:
    assert [pages_for(n) for n in (0, 1, 100, 101, 1_000_000)] == [1, 2, 2, 3, 10_001]

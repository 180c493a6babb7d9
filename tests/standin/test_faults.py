"""Each fault knob, from the command line's config and at runtime via /_standin/faults."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import pytest
import uvloop

from reka_ingest.core.constants import RETRY_AFTER_HEADER, IndexingStatus
from reka_ingest.standin.config import DropWhen
from reka_ingest.standin.pipeline import hold
from tests.standin.conftest import Api, error_of
from tests.support.clock import Clock


def test_fail_share_one_answers_500(make_api: Callable[..., Api], jpegs: list[bytes]) -> None:
    api = make_api(fail_share=1.0)
    for response in (api.upload([jpegs[0]]), api.http.get("/v1/images")):
        assert response.status_code == 500
        assert error_of(response)["type"] == "server_error"
    assert api.admin("stats")["images_stored"] == 0
    # The admin surface is not faulted.
    assert api.admin("faults")["fail_share"] == 1.0


@pytest.mark.parametrize("when", [DropWhen.BEFORE, DropWhen.AFTER])
def test_drop_share_one_drops_the_connection(
    make_api: Callable[..., Api], jpegs: list[bytes], when: DropWhen
) -> None:
    api = make_api(drop_share=1.0, drop_when=when)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        api.upload([jpegs[0]])
    stats = api.admin("stats")
    assert stats["connections_dropped"] == 1
    # "after" stored the upload although the client never saw its id.
    assert stats["images_stored"] == (1 if when is DropWhen.AFTER else 0)


def test_latency_is_added(api: Api) -> None:
    api.faults(latency=0.3)
    started = time.monotonic()
    assert api.http.get("/v1/images").status_code == 200
    assert time.monotonic() - started >= 0.3


def test_upload_latency_slows_uploads_only(api: Api, jpegs: list[bytes]) -> None:
    api.faults(upload_latency=0.3)
    started = time.monotonic()
    assert api.http.get("/v1/images").status_code == 200
    assert time.monotonic() - started < 0.3
    before = time.time()
    started = time.monotonic()
    api.upload_ok([jpegs[0]])
    api.upload([b"not an image"])  # refused: still a span
    assert time.monotonic() - started >= 0.6
    spans = api.admin("upload-spans")["spans"]
    assert len(spans) == 2  # the get is not an upload
    for arrived, answered in spans:
        assert before <= arrived <= answered
        assert answered - arrived >= 0.3
    assert spans[0][1] <= spans[1][0]  # oldest first
    api.http.post("/_standin/reset")
    assert api.admin("upload-spans")["spans"] == []


def test_a_held_request_is_held_its_whole_time_while_the_loop_is_busy() -> None:
    """The stand-in runs on uvloop, whose timers count whole milliseconds: with other
    work waking the loop (other requests, indexing timers), a plain `asyncio.sleep`
    ends up to a millisecond short in about half the cases. `hold` never does."""

    async def ticker() -> None:
        while True:
            await asyncio.sleep(0.0002)

    async def shortfalls() -> list[float]:
        busy = asyncio.ensure_future(ticker())
        short = []
        for n in range(100):
            await asyncio.sleep((n % 7) * 0.0003)  # start at every offset within a millisecond
            started = time.monotonic()
            await hold(0.01)
            short.append(0.01 - (time.monotonic() - started))
        busy.cancel()
        return short

    assert max(uvloop.run(shortfalls())) <= 0


def test_a_429_burst_of_k_then_success(make_api: Callable[..., Api], jpegs: list[bytes]) -> None:
    api = make_api(burst_429_share=1.0, burst_429_length=3, burst_429_retry_after=5)
    statuses = []
    for _ in range(3):
        response = api.http.get("/v1/images")
        statuses.append(response.status_code)
        assert response.headers[RETRY_AFTER_HEADER] == "5"
        assert error_of(response)["type"] == "rate_limit_error"
        if len(statuses) == 1:
            api.faults(burst_429_share=0.0)  # no new bursts; the one under way runs its course
    statuses.append(api.http.get("/v1/images").status_code)
    assert statuses == [429, 429, 429, 200]


def test_index_delay_keeps_status_1_until_the_clock_moves(
    make_api: Callable[..., Api], clock: Clock, jpegs: list[bytes]
) -> None:
    api = make_api(index_delay=30.0)
    uploaded = api.upload_ok([jpegs[0]])[0]
    assert uploaded["indexing_status"] == IndexingStatus.IN_PROGRESS  # the upload says so too
    image_id = uploaded["image_id"]
    assert api.http.get(f"/v1/images/{image_id}").json()["indexing_status"] == 1
    clock.advance(29.5)
    assert api.http.get(f"/v1/images/{image_id}").json()["indexing_status"] == 1
    clock.advance(0.5)
    assert api.http.get(f"/v1/images/{image_id}").json()["indexing_status"] == 2


def test_index_fail_share_one_ends_at_3(make_api: Callable[..., Api], jpegs: list[bytes]) -> None:
    api = make_api(index_fail_share=1.0)
    results = api.upload_ok(jpegs[:3])
    # No index delay: the upload already reports the end, as a get does.
    assert {r["indexing_status"] for r in results} == {IndexingStatus.FAILED}
    for result in results:
        status = api.http.get(f"/v1/images/{result['image_id']}").json()["indexing_status"]
        assert status == IndexingStatus.FAILED


def test_index_fail_share_is_deterministic_per_image(
    make_api: Callable[..., Api], jpegs: list[bytes]
) -> None:
    api = make_api(index_fail_share=0.5)
    results = api.upload_ok(jpegs[:40])
    statuses = [
        api.http.get(f"/v1/images/{r['image_id']}").json()["indexing_status"] for r in results
    ]
    assert set(statuses) == {IndexingStatus.INDEXED, IndexingStatus.FAILED}
    again = [api.http.get(f"/v1/images/{r['image_id']}").json()["indexing_status"] for r in results]
    assert again == statuses


def test_index_false_reports_0(api: Api, jpegs: list[bytes]) -> None:
    result = api.upload_ok([jpegs[0]], index=False)[0]
    assert result["indexing_status"] == IndexingStatus.NOT_INDEXED
    got = api.http.get(f"/v1/images/{result['image_id']}").json()
    assert got["indexing_status"] == IndexingStatus.NOT_INDEXED


def test_runtime_fault_changes_validate_and_reset_restores(api: Api, jpegs: list[bytes]) -> None:
    bad = api.http.post("/_standin/faults", json={"fail_share": 2})
    assert bad.status_code == 400
    assert error_of(bad)["details"][0]["param"] == "fail_share"
    unknown = api.http.post("/_standin/faults", json={"no_such_knob": 1})
    assert unknown.status_code == 400

    assert api.faults(fail_share=1.0)["fail_share"] == 1.0
    assert api.upload([jpegs[0]]).status_code == 500
    assert api.http.post("/_standin/reset").status_code == 200
    assert api.admin("faults")["fail_share"] == 0.0
    assert api.upload([jpegs[0]]).status_code == 200
    stats = api.admin("stats")
    assert stats["images_stored"] == 1
    assert stats["requests"]["upload"] == {"200": 1}

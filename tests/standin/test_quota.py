"""The rolling per-key quota: 429 with both error fields and the headers, then recovery."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from reka_ingest.core.constants import (
    RATE_LIMIT_CODE,
    RATELIMIT_LIMIT_HEADER,
    RATELIMIT_REMAINING_HEADER,
    RATELIMIT_RESET_HEADER,
    RETRY_AFTER_HEADER,
    ErrorType,
)
from reka_ingest.standin.quota import UNLIMITED_REPORTED
from tests.standin.conftest import OTHER_KEY, Api, error_of
from tests.support.clock import Clock

WINDOW = 100.0


def _rate(response: httpx.Response) -> tuple[int, int, int, int]:
    h = response.headers
    return (
        int(h[RATELIMIT_LIMIT_HEADER]),
        int(h[RATELIMIT_REMAINING_HEADER]),
        int(h[RATELIMIT_RESET_HEADER]),
        int(h[RETRY_AFTER_HEADER]),
    )


def test_upload_quota_runs_out_then_recovers_as_the_window_rolls(
    make_api: Callable[..., Api], clock: Clock, jpegs: list[bytes]
) -> None:
    api = make_api(upload_quota=3, quota_window=WINDOW)
    first = api.upload([jpegs[0]])
    assert _rate(first) == (3, 2, 100, 0)
    clock.advance(10)
    assert _rate(api.upload([jpegs[1]]))[:2] == (3, 1)
    assert _rate(api.upload([jpegs[2]]))[:2] == (3, 0)

    refused = api.upload([jpegs[3]])
    assert refused.status_code == 429
    error = error_of(refused)
    assert error["type"] == ErrorType.RATE_LIMIT
    assert error["code"] == RATE_LIMIT_CODE
    # The oldest request (at t=0) leaves the window at t=100; now is t=10.
    assert _rate(refused) == (3, 0, 90, 90)

    # Get/list report the upload budget without spending it.
    assert _rate(api.http.get("/v1/images"))[:2] == (3, 0)
    # Another key has its own window.
    other = api.http.post(
        "/v1/images/search", json={"query": "x"}, headers={"X-Api-Key": OTHER_KEY}
    )
    assert other.status_code == 200

    clock.advance(90)  # t=100: the first request has left the window
    again = api.upload([jpegs[3]])
    assert again.status_code == 200
    assert _rate(again)[:2] == (3, 0)
    assert api.upload([jpegs[4]]).status_code == 429
    assert api.admin("stats")["requests"]["upload"] == {"200": 4, "429": 2}


def test_search_has_its_own_counter(
    make_api: Callable[..., Api], clock: Clock, jpegs: list[bytes]
) -> None:
    api = make_api(upload_quota=5, search_quota=1, quota_window=WINDOW)
    assert api.http.post("/v1/images/search", json={"query": "car"}).status_code == 200
    refused = api.http.post("/v1/images/search", json={"query": "car"})
    assert refused.status_code == 429
    assert error_of(refused)["code"] == RATE_LIMIT_CODE
    assert _rate(refused)[0] == 1
    assert api.upload([jpegs[0]]).status_code == 200  # uploads unaffected
    clock.advance(WINDOW)
    assert api.http.post("/v1/images/search", json={"query": "car"}).status_code == 200


def test_unlimited_reports_a_large_budget_and_never_refuses(api: Api, jpegs: list[bytes]) -> None:
    for i in range(5):
        response = api.upload([jpegs[i]])
        assert response.status_code == 200
        assert _rate(response) == (UNLIMITED_REPORTED, UNLIMITED_REPORTED, 0, 0)

"""Paths and methods: what is served, and the 404 envelope (with every header) for the rest."""

from __future__ import annotations

from reka_ingest.core.constants import (
    RATELIMIT_LIMIT_HEADER,
    RATELIMIT_REMAINING_HEADER,
    RATELIMIT_RESET_HEADER,
    REQUEST_ID_HEADER,
    RETRY_AFTER_HEADER,
)
from tests.standin.conftest import Api, error_of

HEADERS = (
    REQUEST_ID_HEADER,
    RATELIMIT_LIMIT_HEADER,
    RATELIMIT_REMAINING_HEADER,
    RATELIMIT_RESET_HEADER,
    RETRY_AFTER_HEADER,
)


def test_a_served_path_with_another_method_is_a_404_envelope(api: Api) -> None:
    for method, path in (
        ("POST", "/v1/images/some-id"),
        ("PUT", "/v1/images"),
        ("GET", "/v1/images/upload/x"),
        ("DELETE", "/_standin/faults"),
        ("POST", "/_standin/files/some-id"),
    ):
        response = api.http.request(method, path)
        assert response.status_code == 404, (method, path)
        assert error_of(response)["type"] == "not_found_error"
        assert all(header in response.headers for header in HEADERS)
    assert api.admin("stats")["requests"]["unknown"] == {"404": 5}


def test_head_is_not_answered_as_get(api: Api) -> None:
    response = api.http.head("/v1/images")
    assert response.status_code == 404
    assert REQUEST_ID_HEADER in response.headers


def test_a_trailing_slash_lists_and_is_never_redirected(api: Api, jpegs: list[bytes]) -> None:
    image_id = api.upload_ok([jpegs[0]])[0]["image_id"]
    for path in ("/v1/images/", "/images/"):
        listed = api.http.get(path)
        assert listed.status_code == 200
        assert [r["image_id"] for r in listed.json()["results"]] == [image_id]
    for path in ("/_standin/stats/", f"/v1/images/{image_id}/"):
        assert api.http.get(path).status_code == 404  # not a 307 to the path without it


def test_a_get_of_an_action_path_looks_up_an_image_of_that_name(api: Api) -> None:
    response = api.http.get("/v1/images/upload")
    assert response.status_code == 404
    assert "'upload'" in error_of(response)["message"]
    assert api.admin("stats")["requests"]["get"] == {"404": 1}


def test_a_blank_list_parameter_counts_as_absent(api: Api, jpegs: list[bytes]) -> None:
    ids = [r["image_id"] for r in api.upload_ok(jpegs[:3])]
    response = api.http.get("/v1/images?limit=&offset=")
    assert response.status_code == 200, response.text
    assert [r["image_id"] for r in response.json()["results"]] == ids


def test_a_search_body_over_its_limit_is_413(api: Api) -> None:
    response = api.http.post("/v1/images/search", json={"query": "x" * (1024 * 1024)})
    assert response.status_code == 413
    assert error_of(response)["type"] == "validation_error"

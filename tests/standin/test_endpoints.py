"""The five endpoints and image URLs, over real HTTP."""

from __future__ import annotations

import uuid

import httpx

from reka_ingest.core.constants import (
    RATELIMIT_LIMIT_HEADER,
    RATELIMIT_REMAINING_HEADER,
    RATELIMIT_RESET_HEADER,
    REQUEST_ID_HEADER,
    RETRY_AFTER_HEADER,
    IndexingStatus,
)
from tests.standin.conftest import Api, error_of
from tests.support.images import image_bytes

IMAGE_KEYS = {"image_id", "image_url", "indexing_status", "upload_timestamp"}
RATE_HEADERS = (
    RATELIMIT_LIMIT_HEADER,
    RATELIMIT_REMAINING_HEADER,
    RATELIMIT_RESET_HEADER,
    RETRY_AFTER_HEADER,
)


def test_upload_returns_one_image_per_file_with_all_four_keys(api: Api, jpegs: list[bytes]) -> None:
    results = api.upload_ok(jpegs[:3])
    assert len(results) == 3
    for image in results:
        assert set(image) == IMAGE_KEYS
        assert image["indexing_status"] == IndexingStatus.INDEXED  # index delay 0: done at once
        assert image["upload_timestamp"] == api.server.state.clock()
        uuid.UUID(image["image_id"])
    assert len({image["image_id"] for image in results}) == 3


def test_every_upload_gets_a_new_id_even_for_the_same_bytes(api: Api, jpegs: list[bytes]) -> None:
    first = api.upload_ok([jpegs[0]])[0]["image_id"]
    second = api.upload_ok([jpegs[0]])[0]["image_id"]
    assert first != second
    assert api.admin("stats")["images_stored"] == 2


def test_every_response_has_a_unique_request_id_and_rate_headers(api: Api) -> None:
    responses = [
        api.http.get("/v1/images"),
        api.http.get("/v1/images/nope"),
        httpx.get(f"{api.server.base_url}/v1/images"),
    ]
    assert [r.status_code for r in responses] == [200, 404, 401]
    ids = {r.headers[REQUEST_ID_HEADER] for r in responses}
    assert len(ids) == 3
    for response in responses:
        for header in RATE_HEADERS:
            assert int(response.headers[header]) >= 0


def test_get_returns_the_image_unwrapped(api: Api, jpegs: list[bytes]) -> None:
    uploaded = api.upload_ok([jpegs[0]])[0]
    response = api.http.get(f"/v1/images/{uploaded['image_id']}")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == IMAGE_KEYS
    assert body["image_id"] == uploaded["image_id"]
    assert body["indexing_status"] == IndexingStatus.INDEXED  # index delay 0: done at next look


def test_list_pages_in_upload_order_and_checks_its_bounds(api: Api, jpegs: list[bytes]) -> None:
    ids = [r["image_id"] for r in api.upload_ok(jpegs[:25])]
    default = api.http.get("/v1/images").json()["results"]
    assert [r["image_id"] for r in default] == ids[:20]
    page = api.http.get("/v1/images", params={"limit": 10, "offset": 20}).json()
    assert set(page) == {"results"}
    assert [r["image_id"] for r in page["results"]] == ids[20:]
    assert all(set(r) == IMAGE_KEYS for r in page["results"])
    for params, param in (
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"offset": -1}, "offset"),
        ({"limit": "x"}, "limit"),
    ):
        response = api.http.get("/v1/images", params=params)
        assert response.status_code == 400
        assert error_of(response)["param"] == param


def test_delete_removes_the_image_and_a_second_delete_is_404(api: Api, jpegs: list[bytes]) -> None:
    image_id = api.upload_ok([jpegs[0]])[0]["image_id"]
    response = api.http.delete(f"/v1/images/{image_id}")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"status", "message"}
    assert all(isinstance(v, str) for v in body.values())
    assert api.http.get(f"/v1/images/{image_id}").status_code == 404
    again = api.http.delete(f"/v1/images/{image_id}")
    assert again.status_code == 404
    assert error_of(again)["type"] == "not_found_error"


def test_image_url_serves_the_same_bytes_with_their_type(api: Api, jpegs: list[bytes]) -> None:
    png = image_bytes(99, fmt="PNG")
    results = api.upload_ok([jpegs[0], png], names=["a.jpg", "b.png"])
    for image, data, content_type in zip(
        results, [jpegs[0], png], ["image/jpeg", "image/png"], strict=True
    ):
        assert image["image_url"].startswith(api.server.base_url)
        response = httpx.get(image["image_url"])  # no key, like a signed URL
        assert response.status_code == 200
        assert response.content == data
        assert response.headers["content-type"] == content_type


def test_unprefixed_legacy_paths_work_too(api: Api, jpegs: list[bytes]) -> None:
    image_id = api.upload_ok([jpegs[0]])[0]["image_id"]
    assert api.http.get(f"/images/{image_id}").json()["image_id"] == image_id
    assert len(api.http.get("/images").json()["results"]) == 1


def test_overwrite_metering_header_is_accepted(api: Api, jpegs: list[bytes]) -> None:
    api.http.headers["X-Enable-Overwrite-Metering"] = "true"
    assert api.upload_ok([jpegs[0]])
    assert api.http.post("/v1/images/search", json={"query": "x"}).status_code == 200


def test_unknown_route_is_a_404_envelope(api: Api) -> None:
    response = api.http.get("/v2/nothing")
    assert response.status_code == 404
    assert error_of(response)["type"] == "not_found_error"

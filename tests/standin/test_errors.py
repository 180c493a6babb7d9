"""Every 4xx of the upload path, each in Reka's envelope with the right `param`."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import httpx

from tests.standin.conftest import Api, error_of


def _assert_error(response: httpx.Response, status: int, kind: str, param: str | None) -> None:
    assert response.status_code == status, response.text
    error = error_of(response)
    assert error["type"] == kind
    assert error.get("param") == param


def test_bytes_that_are_not_an_image_are_400_naming_the_part(api: Api, jpegs: list[bytes]) -> None:
    images = [jpegs[0], jpegs[1], jpegs[2], b"%PDF-1.7 not an image at all", jpegs[4]]
    _assert_error(api.upload(images), 400, "validation_error", "images[3]")
    assert api.admin("stats")["images_stored"] == 0  # all or nothing


def test_bad_metadata_json_is_400_on_metadata(api: Api, jpegs: list[bytes]) -> None:
    _assert_error(api.upload([jpegs[0]], metadata="{not json"), 400, "validation_error", "metadata")


def test_metadata_of_the_wrong_shape_is_400(api: Api, jpegs: list[bytes]) -> None:
    _assert_error(api.upload([jpegs[0]], metadata='{"x": 1}'), 400, "validation_error", "metadata")


def test_a_bare_list_of_entries_is_accepted(api: Api, jpegs: list[bytes]) -> None:
    entries = [{"indexing_config": {"index": False}, "metadata": {"caption": "c"}}]
    response = api.upload([jpegs[0]], metadata=json.dumps(entries))
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["indexing_status"] == 0


def test_string_recorded_timestamp_is_400_naming_the_field(api: Api, jpegs: list[bytes]) -> None:
    metas = [{}, {"recorded_timestamp_utc": "1700000000"}]
    _assert_error(
        api.upload(jpegs[:2], metas), 400, "validation_error", "metadata[1].recorded_timestamp_utc"
    )


def test_bad_detection_metadata_is_400_naming_the_field(api: Api, jpegs: list[bytes]) -> None:
    cases = {
        "metadata[0].detection_metadata[0].class_name": [{"bounding_box": [1]}],
        "metadata[0].detection_metadata[0].bounding_box": [{"class_name": "car"}],
        "metadata[0].detection_metadata[1].confidence": [
            {"class_name": "car", "bounding_box": [1, 2, 3, 4]},
            {"class_name": "car", "bounding_box": [1, 2, 3, 4], "confidence": "high"},
        ],
    }
    for param, detections in cases.items():
        response = api.upload([jpegs[0]], [{"detection_metadata": detections}])
        _assert_error(response, 400, "validation_error", param)


def test_valid_metadata_with_extra_keys_passes_through(api: Api, jpegs: list[bytes]) -> None:
    meta = {
        "camera_id": "cam-1",
        "recorded_timestamp_utc": 1_700_000_000,
        "detection_metadata": [
            {
                "class_name": "car",
                "bounding_box": [1, 2, 3, 4],
                "confidence": None,
                "is_license_plate": True,
                "license_plate_number": "ABC123",
                "ncic_category": None,
            }
        ],
        "my_own_key": {"nested": [1, 2]},
    }
    image_id = api.upload_ok([jpegs[0]], metas=[meta])[0]["image_id"]
    assert api.admin(f"images/{image_id}")["metadata"] == meta


def test_count_mismatch_is_400_on_metadata(api: Api, jpegs: list[bytes]) -> None:
    entries = json.dumps({"requests": [{"metadata": {}}]})
    response = api.upload(jpegs[:2], metadata=entries)
    _assert_error(response, 400, "validation_error", "metadata")
    assert error_of(response)["details"] == [{"images": 2, "metadata_entries": 1}]


def test_missing_metadata_part_is_400(api: Api, jpegs: list[bytes]) -> None:
    response = api.http.post(
        "/v1/images/upload", files=[("images", ("a.jpg", jpegs[0], "image/jpeg"))]
    )
    _assert_error(response, 400, "validation_error", "metadata")


def test_not_multipart_is_400(api: Api) -> None:
    response = api.http.post("/v1/images/upload", json={"images": []})
    _assert_error(response, 400, "validation_error", "content-type")


def test_unknown_id_is_404(api: Api) -> None:
    for method in ("GET", "DELETE"):
        response = api.http.request(method, "/v1/images/no-such-image")
        _assert_error(response, 404, "not_found_error", None)


def test_too_many_images_is_413(make_api: Callable[..., Api], jpegs: list[bytes]) -> None:
    api = make_api(max_images_per_request=3)
    _assert_error(api.upload(jpegs[:4]), 413, "validation_error", "images")
    assert api.upload(jpegs[:3]).status_code == 200


def test_an_image_over_the_size_limit_is_413_naming_it(
    make_api: Callable[..., Api], jpegs: list[bytes]
) -> None:
    limit = max(len(j) for j in jpegs[:2])
    api = make_api(max_image_bytes=limit)
    big = jpegs[0] + b"\0" * (limit - len(jpegs[0]) + 1)
    _assert_error(api.upload([jpegs[1], big]), 413, "validation_error", "images[1]")


def test_a_body_over_the_request_limit_is_413_before_reading_it(
    make_api: Callable[..., Api], jpegs: list[bytes]
) -> None:
    api = make_api(max_request_bytes=10_000)
    response = api.upload(jpegs[:5])
    _assert_error(response, 413, "validation_error", None)
    assert "exceeds" in error_of(response)["message"]


def test_a_chunked_body_over_the_limit_is_413_while_reading(make_api: Callable[..., Api]) -> None:
    api = make_api(max_request_bytes=10_000)

    def chunks() -> Iterator[bytes]:
        # A well-formed start, so the parser (which reads as the body arrives) has
        # nothing to refuse before the size does: one image part that never ends.
        yield b'--abc\r\nContent-Disposition: form-data; name="images"; filename="a.jpg"\r\n\r\n'
        for _ in range(20):
            yield b"x" * 1000

    response = api.http.post(
        "/v1/images/upload",
        content=chunks(),
        headers={"Content-Type": "multipart/form-data; boundary=abc"},
    )
    _assert_error(response, 413, "validation_error", None)

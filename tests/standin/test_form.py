"""The upload's multipart body, parsed as Reka's FastAPI server parses it (python-multipart).

Hand-built bodies where httpx would not send the case; every refusal in
Reka's envelope with the `param` it is about, never a 500.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

import httpx

from tests.standin.conftest import Api, error_of

BOUNDARY = "standin-form-test"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
IMAGE = 'form-data; name="images"; filename="a.jpg"'
METADATA = 'form-data; name="metadata"'


def _part(disposition: str, data: bytes) -> bytes:
    """One part; a file part (one with a filename) says it is a JPEG."""
    kind = "\r\nContent-Type: image/jpeg" if "filename" in disposition else ""
    head = f"--{BOUNDARY}\r\nContent-Disposition: {disposition}{kind}\r\n\r\n"
    return head.encode() + data + b"\r\n"


def _body(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def _metadata(count: int) -> bytes:
    return json.dumps({"requests": [{"metadata": {}}] * count}).encode()


def _post(api: Api, body: bytes) -> httpx.Response:
    return api.http.post("/v1/images/upload", content=body, headers={"Content-Type": CONTENT_TYPE})


def _assert_400(response: httpx.Response, param: str) -> None:
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["type"] == "validation_error"
    assert error["param"] == param


def test_metadata_over_starlettes_default_part_limit_is_taken(api: Api, jpegs: list[bytes]) -> None:
    caption = "a long caption " * 100_000  # 1.5 MB: over Starlette's 1 MB default per field
    result = api.upload_ok([jpegs[0]], metas=[{"caption": caption}])[0]
    assert api.admin(f"images/{result['image_id']}")["metadata"]["caption"] == caption


def test_an_image_spooled_to_disk_keeps_its_bytes(api: Api, jpegs: list[bytes]) -> None:
    big = jpegs[0] + bytes(range(256)) * 12_000  # 3 MB: past the 1 MB in-memory spool
    result = api.upload_ok([jpegs[1], big])[1]
    detail = api.admin(f"images/{result['image_id']}")
    assert detail["size"] == len(big)
    assert detail["sha256"] == hashlib.sha256(big).hexdigest()
    assert httpx.get(result["image_url"]).content == big


def test_a_non_ascii_filename_arrives_as_sent(api: Api, jpegs: list[bytes]) -> None:
    name = 'café 東京 "quoted".jpg'
    result = api.upload_ok([jpegs[0]], names=[name])[0]
    # httpx sends `"` as %22 (the HTML5 form encoding); the server keeps what it got.
    assert api.admin(f"images/{result['image_id']}")["filename"] == name.replace('"', "%22")


def test_filename_star_is_ignored_the_plain_filename_counts(api: Api, jpegs: list[bytes]) -> None:
    disposition = 'form-data; name="images"; filename="plain.jpg"; filename*=UTF-8\'\'%C3%A9.jpg'
    response = _post(api, _body(_part(disposition, jpegs[0]), _part(METADATA, _metadata(1))))
    assert response.status_code == 200, response.text
    image_id = response.json()["results"][0]["image_id"]
    assert api.admin(f"images/{image_id}")["filename"] == "plain.jpg"


def test_an_images_part_without_a_filename_is_400_naming_it(api: Api, jpegs: list[bytes]) -> None:
    parts = (
        _part(IMAGE, jpegs[0]),
        _part('form-data; name="images"', jpegs[1]),
        _part(METADATA, _metadata(2)),
    )
    _assert_400(_post(api, _body(*parts)), "images[1]")


def test_metadata_sent_as_a_file_is_400(api: Api, jpegs: list[bytes]) -> None:
    metadata_file = _part('form-data; name="metadata"; filename="m.json"', _metadata(1))
    _assert_400(_post(api, _body(_part(IMAGE, jpegs[0]), metadata_file)), "metadata")


def test_a_part_without_a_name_is_400(api: Api, jpegs: list[bytes]) -> None:
    nameless = _part('form-data; filename="a.jpg"', jpegs[0])
    _assert_400(_post(api, _body(nameless, _part(METADATA, _metadata(1)))), "body")


def test_a_body_that_is_not_multipart_inside_is_400(api: Api) -> None:
    _assert_400(_post(api, b"this is not a multipart body"), "body")


def test_a_content_type_without_boundary_is_400(api: Api, jpegs: list[bytes]) -> None:
    response = api.http.post(
        "/v1/images/upload",
        content=_body(_part(IMAGE, jpegs[0])),
        headers={"Content-Type": "multipart/form-data"},
    )
    _assert_400(response, "content-type")


def test_extra_fields_are_ignored_up_to_one_per_image(
    make_api: Callable[..., Api], jpegs: list[bytes]
) -> None:
    api = make_api(max_images_per_request=2)
    images = (_part(IMAGE, jpegs[0]), _part(METADATA, _metadata(1)))
    extra = _part('form-data; name="note"', b"ignored")
    assert _post(api, _body(*images, extra, extra)).status_code == 200
    # Fields past one per image plus `metadata` are refused.
    _assert_400(_post(api, _body(*images, extra, extra, extra)), "body")
    assert api.admin("stats")["requests"]["upload"] == {"200": 1, "400": 1}

"""`image_url` serves exactly the bytes uploaded, from memory and from a folder.

What `reka-ingest check` relies on to settle a possible duplicate: fetch an
image's `image_url` without a key, hash the bytes, compare with the file's.
The URL is absolute, on the host the client used, the same from upload,
list, get and search; it answers the stored bytes with their sniffed
content type, and 404 once the image is deleted or expired.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from reka_ingest.core.constants import CONTENT_TYPES
from tests.standin.conftest import Api, error_of
from tests.support.clock import Clock
from tests.support.images import image_bytes

# The first bytes the stand-in takes for each format (reka_ingest.standin.sniff), by format.
MAGIC = {
    "JPEG": b"\xff\xd8\xff",
    "PNG": b"\x89PNG\r\n\x1a\n",
    "GIF": b"GIF89a",
    "WEBP": b"RIFF\x00\x00\x00\x00WEBP",
    "TIFF": b"II*\x00",
    "BMP": b"BM" + bytes(24),
}
TAILS = st.one_of(
    st.binary(max_size=64),
    st.binary(min_size=1000, max_size=70_000),  # past the chunk sizes of the HTTP layers
    st.sampled_from([b"", b"\x00" * 5000, b"\r\n--boundary--\r\n", b"\xff" * 3]),
)


def _round_trip(api: Api, fmt: str, tail: bytes) -> None:
    data = MAGIC[fmt] + tail
    uploaded = api.upload_ok([data], names=["any.bin"])[0]
    response = httpx.get(uploaded["image_url"])  # no key: as a client follows the URL
    assert response.status_code == 200, response.text
    assert response.content == data
    assert response.headers["content-type"] == CONTENT_TYPES[fmt]
    assert response.headers["content-length"] == str(len(data))


@pytest.mark.parametrize("in_folder", [False, True], ids=["memory", "folder"])
def test_any_uploaded_bytes_come_back_identical_from_image_url(
    make_api: Callable[..., Api], tmp_path: Path, in_folder: bool
) -> None:
    api = make_api(storage_dir=tmp_path / "images" if in_folder else None)

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(fmt=st.sampled_from(sorted(MAGIC)), tail=TAILS)
    @example(fmt="JPEG", tail=image_bytes(7)[3:])  # a real JPEG
    @example(fmt="PNG", tail=image_bytes(8, fmt="PNG")[8:])  # a real PNG
    @example(fmt="JPEG", tail=bytes(range(256)) * 4096)  # 1 MiB
    def check(fmt: str, tail: bytes) -> None:
        _round_trip(api, fmt, tail)

    check()


def test_one_request_of_many_images_gives_each_its_own_bytes(api: Api, jpegs: list[bytes]) -> None:
    data = [*jpegs[:5], image_bytes(1, fmt="PNG"), image_bytes(2, fmt="GIF")]
    results = api.upload_ok(data)
    assert len({r["image_url"] for r in results}) == len(data)
    for image, sent in zip(results, data, strict=True):
        assert httpx.get(image["image_url"]).content == sent


def test_the_url_is_the_same_from_every_endpoint_and_absolute_on_the_clients_host(
    api: Api, jpegs: list[bytes]
) -> None:
    image = api.upload_ok([jpegs[0]], metas=[{"caption": "a dog"}])[0]
    url = image["image_url"]
    image_id = image["image_id"]
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc) == ("http", f"127.0.0.1:{api.server.port}")
    assert parts.path.endswith(f"/{image_id}")
    assert not parts.query and not parts.fragment

    assert api.http.get(f"/v1/images/{image_id}").json()["image_url"] == url
    assert api.http.get("/v1/images").json()["results"][0]["image_url"] == url
    found = api.http.post("/v1/images/search", json={"query": "dog"}).json()["results"]
    assert [r["image_url"] for r in found] == [url]

    # Asked through another name for the same host, the URL names that host.
    via_localhost = f"http://localhost:{api.server.port}"
    got = httpx.get(f"{via_localhost}/v1/images/{image_id}", headers=api.http.headers).json()
    assert got["image_url"] == f"{via_localhost}{parts.path}"
    assert httpx.get(got["image_url"]).content == jpegs[0]


def test_the_url_needs_no_key_and_ignores_a_wrong_one(api: Api, jpegs: list[bytes]) -> None:
    url = api.upload_ok([jpegs[0]])[0]["image_url"]
    assert httpx.get(url, headers={"X-Api-Key": "not-a-key"}).content == jpegs[0]


def test_the_url_is_not_faulted_or_counted_against_the_quota(
    make_api: Callable[..., Api], jpegs: list[bytes]
) -> None:
    """A drill that injects 500s into the API still lets `check` fetch the bytes."""
    api = make_api(upload_quota=1)
    url = api.upload_ok([jpegs[0]])[0]["image_url"]
    api.faults(fail_share=1.0, burst_429_share=1.0)
    for _ in range(3):
        assert httpx.get(url).content == jpegs[0]
    assert api.admin("stats")["requests"]["file"] == {"200": 3}


@pytest.mark.parametrize("in_folder", [False, True], ids=["memory", "folder"])
@pytest.mark.parametrize("how", ["delete", "expire", "retention"])
def test_the_url_answers_404_once_the_image_is_gone(
    make_api: Callable[..., Api],
    clock: Clock,
    jpegs: list[bytes],
    *,
    tmp_path: Path,
    in_folder: bool,
    how: str,
) -> None:
    api = make_api(storage_dir=tmp_path / "images" if in_folder else None, retention=3600.0)
    gone, kept = api.upload_ok(jpegs[:2])
    assert httpx.get(gone["image_url"]).status_code == 200
    if how == "delete":
        assert api.http.delete(f"/v1/images/{gone['image_id']}").status_code == 200
    elif how == "expire":
        assert api.http.post(f"/_standin/images/{gone['image_id']}/expire").status_code == 200
    else:
        api.faults(retention=0.0)  # the next upload is kept; the first two were not
        kept = api.upload_ok([jpegs[1]])[0]
        clock.advance(3600.0)
    response = httpx.get(gone["image_url"])
    assert response.status_code == 404
    assert error_of(response)["type"] == "not_found_error"
    assert httpx.get(kept["image_url"]).content == jpegs[1]


def test_an_unknown_id_is_a_404_envelope(api: Api) -> None:
    response = httpx.get(f"{api.server.base_url}/_standin/files/no-such-image")
    assert response.status_code == 404
    assert error_of(response)["type"] == "not_found_error"

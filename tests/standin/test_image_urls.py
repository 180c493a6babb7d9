"""URL uploads: `image_urls` inside `metadata`, no file parts, the stand-in fetching each.

Real parts only: the stand-in on loopback, and a second HTTP server on
loopback (tests.support.url_images) serving real JPEG and PNG bytes made with
Pillow, or a 404, a redirect, a slow body. Both encodings Reka's form endpoint
takes are sent (multipart with only `metadata`, and urlencoded, as Reka's CLI
does), and the request exactly as the CLI builds it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reka_ingest.standin.metadata import SECURITY_KEYS
from tests.standin.conftest import KEY, Api, error_of
from tests.support.images import image_bytes
from tests.support.url_images import Answer, ImageServer, closed_port_url, serve_images

ENCODINGS = ("form", "multipart")


@pytest.fixture
def images() -> Iterator[ImageServer]:
    with serve_images() as server:
        yield server


def _metadata(urls: list[str], metas: list[dict[str, Any]] | None = None, **extra: Any) -> str:
    metas = metas if metas is not None else [{} for _ in urls]
    entries = [{"indexing_config": {"index": True}, "metadata": m} for m in metas]
    return json.dumps({"requests": entries, "image_urls": urls, **extra})


def post_urls(
    api: Api,
    urls: list[str],
    metas: list[dict[str, Any]] | None = None,
    *,
    encoding: str = "form",
    metadata: str | None = None,
) -> httpx.Response:
    """A URL upload: only the `metadata` field, urlencoded or as multipart."""
    text = metadata if metadata is not None else _metadata(urls, metas)
    if encoding == "form":
        return api.http.post("/v1/images/upload", data={"metadata": text})
    # httpx goes multipart only with files; a part without a filename is a plain field.
    return api.http.post("/v1/images/upload", files=[("metadata", (None, text.encode(), None))])


def _assert_error(response: httpx.Response, status: int, param: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = error_of(response)
    assert error["type"] == "validation_error"
    assert error["param"] == param
    return error


def _assert_nothing_stored(api: Api) -> None:
    stats = api.admin("stats")
    assert stats["images_stored"] == 0
    assert stats["uploads_accepted"] == 0
    assert api.http.get("/v1/images").json() == {"results": []}


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_each_url_is_fetched_stored_and_answered_in_order(
    api: Api, images: ImageServer, encoding: str
) -> None:
    sources = [
        images.put_image("cams/a.jpg", 1),
        images.put_image("cams/b.png", 2, fmt="PNG"),
        images.put_image("cams/c.jpg", 3),
    ]
    metas: list[dict[str, Any]] = [
        {"camera_id": "cam-1", "recorded_timestamp_utc": 1_700_000_001, "site": "lot 7"},
        {
            "caption": "a red car",
            "detection_metadata": [{"class_name": "car", "bounding_box": [1]}],
        },
        {},
    ]
    response = post_urls(api, [url for url, _ in sources], metas, encoding=encoding)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == len(sources)

    listed = api.http.get("/v1/images").json()["results"]
    assert [r["image_id"] for r in listed] == [r["image_id"] for r in results]
    for result, (url, data), meta in zip(results, sources, metas, strict=True):
        got = api.http.get(f"/v1/images/{result['image_id']}")
        assert got.status_code == 200
        assert got.json() == result  # indexing delay 0: already what a get says
        assert httpx.get(result["image_url"]).content == data
        detail = api.admin(f"images/{result['image_id']}")
        assert detail["metadata"] == meta
        assert detail["index"] is True
        assert detail["sha256"] == hashlib.sha256(data).hexdigest()
        assert detail["size"] == len(data)
        assert detail["source_url"] == url
        assert detail["filename"] == url.rsplit("/", 1)[1]
        assert detail["content_type"] == ("image/png" if url.endswith(".png") else "image/jpeg")
    stats = api.admin("stats")
    assert stats["urls_fetched"] == len(sources)
    assert stats["images_received"] == len(sources)


def test_a_request_exactly_as_rekas_cli_builds_it(api: Api, images: ImageServer) -> None:
    """reka-ai/reka-cli, reka/commands/images.py: `--urls a,b` becomes this POST."""
    urls = [images.put_image(f"cli-{i}.jpg", 10 + i)[0] for i in range(3)]
    url_list = [u.strip() for u in ",".join(urls).split(",")]
    requests_meta = [{"indexing_config": {"index": True}, "metadata": {}} for _ in url_list]
    metadata = json.dumps({"requests": requests_meta, "image_urls": url_list})
    with httpx.Client(timeout=httpx.Timeout(30)) as http:  # the CLI's own client: key per call
        response = http.post(
            api.server.base_url + "/v1/images/upload",
            headers={"X-Api-Key": KEY},
            data={"metadata": metadata},
            files=None,
        )
    assert response.request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [api.admin(f"images/{r['image_id']}")["source_url"] for r in results] == urls


def test_an_image_fetched_from_the_stand_ins_own_image_url(api: Api, jpegs: list[bytes]) -> None:
    """The server fetches from itself (one event loop) without waiting on itself."""
    first = api.upload_ok([jpegs[0]])[0]
    again = post_urls(api, [first["image_url"]])
    assert again.status_code == 200, again.text
    copy = again.json()["results"][0]
    assert copy["image_id"] != first["image_id"]
    assert httpx.get(copy["image_url"]).content == jpegs[0]


def test_redirects_are_followed_up_to_the_limit(
    make_api: Callable[..., Api], images: ImageServer
) -> None:
    api = make_api(fetch_max_redirects=2)
    _, data = images.put_image("final.jpg", 4)
    images.redirect("hop1", "hop2")
    images.redirect("hop2", "final.jpg")
    response = post_urls(api, [images.url("hop1")])
    assert response.status_code == 200, response.text
    detail = api.admin(f"images/{response.json()['results'][0]['image_id']}")
    assert detail["sha256"] == hashlib.sha256(data).hexdigest()
    assert detail["filename"] == "final.jpg"  # named after where the bytes came from

    images.redirect("hop0", "hop1")
    error = _assert_error(post_urls(api, [images.url("hop0")]), 400, "image_urls[0]")
    assert "redirected more than 2 times" in error["message"]


# Each bad URL kind: how to make it on the image server, and a word its message holds.
BAD_URLS: dict[str, tuple[Callable[[ImageServer], str], str]] = {
    "404": (lambda s: s.url("missing.jpg"), "HTTP 404"),
    "500": (lambda s: s.answer("broken.jpg", Answer(status=500)), "HTTP 500"),
    "connection_refused": (lambda s: closed_port_url(), "could not be fetched"),
    "not_an_image": (lambda s: s.put("page.html", b"<html>hello</html>", "text/html"), "image"),
    "ftp": (lambda s: "ftp://127.0.0.1/a.jpg", "http or https"),
    "file": (lambda s: "file:///etc/passwd", "http or https"),
    "no_host": (lambda s: "http:///a.jpg", "host"),
    "words": (lambda s: "just some words", "whitespace"),
    "not_a_url": (lambda s: "img.jpg", "http or https"),
    "empty": (lambda s: "", "http"),
    "redirect_to_ftp": (lambda s: s.redirect("to-ftp", "ftp://127.0.0.1/a.jpg"), "http"),
}


@pytest.mark.parametrize("kind", sorted(BAD_URLS))
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_url_that_gives_no_image_fails_the_request_naming_its_index(
    api: Api, images: ImageServer, kind: str, encoding: str
) -> None:
    make, word = BAD_URLS[kind]
    good = [images.put_image(f"good-{i}.jpg", 20 + i)[0] for i in range(4)]
    bad = make(images)
    urls = [*good[:3], bad, good[3]]
    error = _assert_error(post_urls(api, urls, encoding=encoding), 400, "image_urls[3]")
    assert word in error["message"]
    assert error["message"].startswith("image_urls[3] ")
    if bad:
        assert bad not in error["message"]  # a URL may carry a token: only its index is named
    assert [d["param"] for d in error["details"]] == ["image_urls[3]"]
    _assert_nothing_stored(api)


def test_urls_that_are_not_http_are_refused_before_anything_is_fetched(
    api: Api, images: ImageServer
) -> None:
    good, _ = images.put_image("fine.jpg", 30)
    urls = [good, images.url("missing.jpg"), "gopher://x/", good, "mailto:a@b"]
    error = _assert_error(post_urls(api, urls), 400, "image_urls[2]")
    assert [d["param"] for d in error["details"]] == ["image_urls[2]", "image_urls[4]"]
    assert sum(images.hits.values()) == 0


def test_every_url_that_fails_is_in_details_the_first_in_param(
    api: Api, images: ImageServer
) -> None:
    good, _ = images.put_image("fine.jpg", 31)
    urls = [good, closed_port_url(), good, images.url("gone.jpg")]
    error = _assert_error(post_urls(api, urls), 400, "image_urls[1]")
    problems = {d["param"]: d["problem"] for d in error["details"]}
    assert problems == {"image_urls[1]": "unreachable", "image_urls[3]": "http_status"}
    assert api.admin("stats")["url_fetches_failed"] == 2


def test_an_image_over_the_size_limit_is_400_naming_it(
    make_api: Callable[..., Api], images: ImageServer
) -> None:
    small, small_data = images.put_image("small.jpg", 32)
    big_data = image_bytes(33, size=(256, 256))
    api = make_api(max_image_bytes=len(big_data) - 1)
    assert len(small_data) < len(big_data)
    big = images.put("big.jpg", big_data)
    error = _assert_error(post_urls(api, [small, big]), 400, "image_urls[1]")
    assert error["details"][0]["problem"] == "too_large"
    assert post_urls(api, [small]).status_code == 200


def test_a_body_without_a_length_over_the_limit_is_400(
    make_api: Callable[..., Api], images: ImageServer
) -> None:
    data = image_bytes(34)
    api = make_api(max_image_bytes=len(data) - 1)
    # No Content-Length to go by: the bytes are counted as they arrive.
    url = images.answer(
        "unsized.jpg", Answer(body=data, headers=(("Content-Type", "image/jpeg"),), length=False)
    )
    error = _assert_error(post_urls(api, [url]), 400, "image_urls[0]")
    assert error["details"][0]["problem"] == "too_large"


def test_images_over_the_request_limit_together_are_413(
    make_api: Callable[..., Api], images: ImageServer
) -> None:
    sources = [images.put_image(f"t{i}.jpg", 40 + i) for i in range(3)]
    total = sum(len(data) for _, data in sources)
    api = make_api(max_request_bytes=total - 1)
    _assert_error(post_urls(api, [url for url, _ in sources]), 413, "image_urls")
    _assert_nothing_stored(api)
    assert post_urls(api, [url for url, _ in sources[:2]]).status_code == 200


def test_a_slow_url_times_out_as_400(make_api: Callable[..., Api], images: ImageServer) -> None:
    api = make_api(fetch_timeout=0.3)
    slow = images.answer(
        "slow.jpg", Answer(body=image_bytes(50), headers=(("Content-Type", "image/jpeg"),), delay=3)
    )
    good, _ = images.put_image("quick.jpg", 51)
    error = _assert_error(post_urls(api, [good, slow]), 400, "image_urls[1]")
    assert error["details"][0]["problem"] == "timeout"


def test_too_many_urls_is_413_and_nothing_is_fetched(
    make_api: Callable[..., Api], images: ImageServer
) -> None:
    api = make_api(max_images_per_request=3)
    urls = [images.put_image(f"m{i}.jpg", 60 + i)[0] for i in range(4)]
    _assert_error(post_urls(api, urls), 413, "image_urls")
    assert sum(images.hits.values()) == 0
    assert post_urls(api, urls[:3]).status_code == 200


def test_entries_and_urls_must_match_in_number(api: Api, images: ImageServer) -> None:
    urls = [images.put_image(f"n{i}.jpg", 70 + i)[0] for i in range(3)]
    metadata = _metadata(urls, [{}, {}])
    error = _assert_error(post_urls(api, urls, metadata=metadata), 400, "metadata")
    assert error["details"] == [{"image_urls": 3, "metadata_entries": 2}]
    assert sum(images.hits.values()) == 0


def test_files_and_urls_in_one_request_are_refused(
    api: Api, images: ImageServer, jpegs: list[bytes]
) -> None:
    url, _ = images.put_image("mixed.jpg", 80)
    response = api.upload([jpegs[0]], metadata=_metadata([url]))
    error = _assert_error(response, 400, "image_urls")
    assert "not both" in error["message"]
    _assert_nothing_stored(api)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_no_files_and_no_urls_is_400_on_images(api: Api, encoding: str) -> None:
    for metadata in (json.dumps({"requests": []}), _metadata([])):
        _assert_error(post_urls(api, [], encoding=encoding, metadata=metadata), 400, "images")


@pytest.mark.parametrize(
    ("image_urls", "param"),
    [
        ("http://a/b.jpg", "image_urls"),
        ({"0": "http://a"}, "image_urls"),
        (["http://a", 7], "image_urls[1]"),
    ],
)
def test_image_urls_must_be_a_list_of_strings(api: Api, image_urls: Any, param: str) -> None:
    metadata = json.dumps({"requests": [{}, {}], "image_urls": image_urls})
    _assert_error(post_urls(api, [], metadata=metadata), 400, param)


def test_file_uploads_keep_their_rules(api: Api, jpegs: list[bytes]) -> None:
    """Files urlencoded cannot be; an `images` field that is text is refused as before."""
    response = api.http.post(
        "/v1/images/upload",
        data={"images": "not a file", "metadata": json.dumps({"requests": [{}]})},
    )
    _assert_error(response, 400, "images[0]")
    response = api.http.post(
        "/v1/images/upload", content=b"{}", headers={"Content-Type": "text/plain"}
    )
    _assert_error(response, 400, "content-type")
    assert len(api.upload_ok(jpegs[:2])) == 2


# --- properties ----------------------------------------------------------------------

_SECURITY = set(SECURITY_KEYS)
_KEYS = st.text(min_size=1, max_size=12).filter(lambda k: k not in _SECURITY)
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=3),
    max_leaves=8,
)
_METAS = st.dictionaries(_KEYS, _JSON, max_size=4) | st.fixed_dictionaries(
    {"camera_id": st.text(max_size=10), "recorded_timestamp_utc": st.integers(0, 2**40)}
)
Pick = tuple[str, Any, str]  # (kind, seed or scheme, format)
# One URL: a good image (its seed and format), a 404, or not an http URL at all.
_URLS = st.one_of(
    st.tuples(st.just("good"), st.integers(0, 5), st.sampled_from(["JPEG", "PNG"])),
    st.tuples(st.just("missing"), st.integers(0, 99), st.just("")),
    st.tuples(st.just("scheme"), st.sampled_from(["ftp", "file", "data", "ws"]), st.just("")),
)


def test_any_url_list_is_answered_in_order_or_refused_at_its_first_bad_url(
    api: Api, images: ImageServer
) -> None:
    sources = {
        (seed, fmt): images.put_image(f"p/{seed}.{fmt.lower()}", 100 + seed, fmt=fmt)
        for seed in range(6)
        for fmt in ("JPEG", "PNG")
    }

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        picks=st.lists(st.tuples(_URLS, _METAS, st.booleans()), min_size=1, max_size=6),
        encoding=st.sampled_from(ENCODINGS),
    )
    def check(
        picks: list[tuple[tuple[str, Any, str], dict[str, Any], bool]], encoding: str
    ) -> None:
        urls, expected = [], []
        for (kind, value, fmt), _, _ in picks:
            if kind == "good":
                url, data = sources[(value, fmt)]
                expected.append(data)
            elif kind == "missing":
                url = images.url(f"missing/{value}.jpg")
            else:
                url = f"{value}://127.0.0.1/x.jpg"
            urls.append(url)
        metas = [meta for _, meta, _ in picks]
        entries = [
            {"indexing_config": {"index": index}, "metadata": meta} for _, meta, index in picks
        ]
        metadata = json.dumps({"requests": entries, "image_urls": urls})
        response = post_urls(api, urls, encoding=encoding, metadata=metadata)

        kinds = [kind for (kind, _, _), _, _ in picks]
        first_bad = next(
            (i for i, k in enumerate(kinds) if k == "scheme"),
            next((i for i, k in enumerate(kinds) if k == "missing"), None),
        )
        if first_bad is not None:
            _assert_error(response, 400, f"image_urls[{first_bad}]")
            return
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert len(results) == len(picks)
        for result, data, meta, (_, _, index) in zip(results, expected, metas, picks, strict=True):
            detail = api.admin(f"images/{result['image_id']}")
            assert detail["sha256"] == hashlib.sha256(data).hexdigest()
            assert detail["metadata"] == meta
            assert detail["index"] is index
            assert result["indexing_status"] == (2 if index else 0)

    check()

"""RekaClient over httpx.MockTransport: what it sends, what it makes of the answers."""

from __future__ import annotations

import json
import os
import tracemalloc
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from reka_ingest.core.errors import (
    ApiConnectionError,
    ApiProtocolError,
    ApiServerError,
    ApiUsageError,
    RateLimitInfo,
    SettingsError,
)
from reka_ingest.core.settings import RekaSettings
from reka_ingest.reka.client import RekaClient
from reka_ingest.reka.models import DeleteResult, SearchMode, UploadItem
from tests.client.conftest import (
    API_KEY,
    ClientFactory,
    image_bytes,
    image_json,
    write_image,
)


def ok(body: Any, **headers: str) -> httpx.Response:
    return httpx.Response(200, json=body, headers={"X-Request-ID": "req-ok", **headers})


def multipart_parts(request: httpx.Request) -> list[EmailMessage]:
    """The parts of a multipart/form-data request, in wire order, parsed by the stdlib."""
    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    message = message_from_bytes(head + request.read(), policy=policy.HTTP)
    assert isinstance(message, EmailMessage)
    assert message.is_multipart()
    return [part for part in message.iter_parts() if isinstance(part, EmailMessage)]


def part_name(part: EmailMessage) -> str | None:
    value = part.get_param("name", header="content-disposition")
    return value if isinstance(value, str) else None


def items_in(folder: Path) -> list[UploadItem]:
    return [
        UploadItem(
            path=write_image(folder, "a.png", "PNG", seed=1),
            filename="a.png",
            content_type="image/png",
            metadata={"camera_id": "cam-1", "caption": "a red car"},
        ),
        UploadItem(
            path=write_image(folder, "b.jpg", "JPEG", seed=2),
            filename="b.jpg",
            content_type="image/jpeg",
            metadata={},
            index=False,
        ),
        UploadItem(
            path=write_image(folder, "c.gif", "GIF", seed=3),
            filename='c "quoted".gif',
            content_type="image/gif",
            metadata={"recorded_timestamp_utc": 1_700_000_000, "custom": [1, {"x": None}]},
        ),
    ]


# --- auth, paths, repr -----------------------------------------------------------------


def test_auth_header_and_no_bearer(make_client: ClientFactory) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return ok(image_json())

    make_client(handler).get("img-1")
    assert seen[0].headers["X-Api-Key"] == API_KEY
    assert "authorization" not in seen[0].headers


@pytest.mark.parametrize(
    ("base_url", "prefix", "path"),
    [
        ("http://127.0.0.1:9", "/v1", "/v1/images/a%2Fb%20c"),
        ("http://127.0.0.1:9/", "", "/images/a%2Fb%20c"),
        ("http://127.0.0.1:9/proxy/", "/v1/", "/proxy/v1/images/a%2Fb%20c"),
    ],
)
def test_paths_follow_base_url_and_prefix(
    make_client: ClientFactory, base_url: str, prefix: str, path: str
) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return ok(image_json())

    make_client(handler, base_url=base_url, path_prefix=prefix).get("a/b c")
    assert seen[0].url.raw_path.decode() == path


def test_repr_hides_the_key(make_client: ClientFactory) -> None:
    client = make_client(lambda request: ok({}))
    assert API_KEY not in repr(client)
    assert API_KEY not in repr(client.__dict__)


def test_repr_hides_url_user_info() -> None:
    with RekaClient(base_url="http://u:hunter2@127.0.0.1:9", api_key=API_KEY) as client:
        assert "hunter2" not in repr(client)


@pytest.mark.parametrize("key", ["", "  ", "naïve", "two words", "line\nbreak"])
def test_bad_key_refused_without_echo(key: str) -> None:
    with pytest.raises(ApiUsageError) as caught:
        RekaClient(base_url="http://127.0.0.1:9", api_key=key)
    assert key.strip() == "" or key not in str(caught.value)


def test_from_settings_without_key() -> None:
    with pytest.raises(SettingsError, match="REKA_API_KEY"):
        RekaClient.from_settings(RekaSettings(api_key=None))


def test_from_settings_uses_timeouts_and_limits() -> None:
    settings = RekaSettings(
        api_key=SecretStr(API_KEY),
        api_base_url="http://127.0.0.1:9",
        api_path_prefix="/v2",
        connect_timeout=1.5,
        read_timeout=2.5,
        write_timeout=3.5,
        pool_timeout=4.5,
    )
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return ok(image_json())

    with RekaClient.from_settings(settings, transport=httpx.MockTransport(handler)) as client:
        client.get("x")
    assert seen[0].url.path == "/v2/images/x"
    assert seen[0].extensions["timeout"] == {
        "connect": 1.5,
        "read": 2.5,
        "write": 3.5,
        "pool": 4.5,
    }


def test_per_call_timeout(make_client: ClientFactory) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return ok(image_json())

    make_client(handler).get("x", timeout=0.25)
    assert seen[0].extensions["timeout"]["read"] == 0.25


def test_context_manager_closes(make_client: ClientFactory) -> None:
    with make_client(lambda request: ok({})) as client:
        assert not client.closed
    assert client.closed


# --- upload ----------------------------------------------------------------------------


def test_upload_body_shape(make_client: ClientFactory, tmp_path: Path) -> None:
    items = items_in(tmp_path)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return ok({"results": [image_json(f"id-{i}") for i in range(3)]})

    make_client(handler).upload(items)
    request = seen[0]
    assert request.method == "POST"
    assert request.url.path == "/v1/images/upload"
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    parts = multipart_parts(request)
    names = [part_name(part) for part in parts]
    assert sorted(names, key=str) == ["images", "images", "images", "metadata"]
    assert "image_urls" not in names

    images = [part for part in parts if part_name(part) == "images"]
    # httpx escapes a quote in a filename the HTML5 way, as browsers do.
    assert [part.get_filename() for part in images] == ["a.png", "b.jpg", "c %22quoted%22.gif"]
    assert [part.get_content_type() for part in images] == ["image/png", "image/jpeg", "image/gif"]
    assert [part.get_payload(decode=True) for part in images] == [
        item.path.read_bytes() for item in items
    ]

    (meta,) = [part for part in parts if part_name(part) == "metadata"]
    assert meta.get_filename() is None  # a plain form field, not a file
    assert json.loads(meta.get_content()) == {
        "requests": [
            {
                "indexing_config": {"index": True},
                "metadata": {"camera_id": "cam-1", "caption": "a red car"},
            },
            {"indexing_config": {"index": False}, "metadata": {}},
            {
                "indexing_config": {"index": True},
                "metadata": {"recorded_timestamp_utc": 1_700_000_000, "custom": [1, {"x": None}]},
            },
        ]
    }


def test_upload_result(make_client: ClientFactory, tmp_path: Path) -> None:
    items = items_in(tmp_path)
    results = [image_json(f"id-{i}", status=1) for i in range(3)]
    results[1]["future_field"] = "kept"
    headers = {
        "x-ratelimit-requests-limit": "100",
        "x-ratelimit-requests-remaining": "99",
        "x-ratelimit-requests-reset": "86400",
        "retry-after": "0",
    }
    client = make_client(lambda request: ok({"results": results, "extra": 1}, **headers))
    result = client.upload(items)
    assert [image.image_id for image in result.images] == ["id-0", "id-1", "id-2"]
    assert result.request_id == "req-ok"
    assert result.images[0].request_id == "req-ok"
    assert result.images[1].model_extra == {"future_field": "kept"}
    assert result.rate_limit == RateLimitInfo(
        limit=100, remaining=99, reset_seconds=86400.0, retry_after_seconds=0.0
    )


@pytest.mark.parametrize("count", [2, 4])
def test_upload_count_mismatch(make_client: ClientFactory, tmp_path: Path, count: int) -> None:
    body = {"results": [image_json(f"id-{i}") for i in range(count)]}
    client = make_client(lambda request: ok(body))
    with pytest.raises(ApiProtocolError) as caught:
        client.upload(items_in(tmp_path))
    assert caught.value.request_id == "req-ok"
    assert "3 images" in str(caught.value)


def test_upload_nothing(make_client: ClientFactory) -> None:
    with pytest.raises(ApiUsageError):
        make_client(lambda request: ok({})).upload([])


def test_upload_missing_file_sends_nothing(make_client: ClientFactory, tmp_path: Path) -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return ok({"results": []})

    item = UploadItem(path=tmp_path / "gone.png", filename="gone.png", content_type="image/png")
    with pytest.raises(FileNotFoundError):
        make_client(handler).upload([item])
    assert calls == []


def record_opened(monkeypatch: pytest.MonkeyPatch) -> list[IO[bytes]]:
    """Every file object the client opens, so a test can check it was closed."""
    opened: list[IO[bytes]] = []
    real_open = Path.open

    def spy(self: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        handle = real_open(self, mode, *args, **kwargs)
        opened.append(handle)
        return handle

    monkeypatch.setattr(Path, "open", spy)
    return opened


def _answer_ok(request: httpx.Request) -> httpx.Response:
    return ok({"results": [image_json(f"id-{i}") for i in range(3)]})


def _answer_500(request: httpx.Request) -> httpx.Response:
    return httpx.Response(500, json={"error": {"type": "server_error", "message": "x"}})


def _answer_drop(request: httpx.Request) -> httpx.Response:
    raise httpx.RemoteProtocolError("Server disconnected", request=request)


@pytest.mark.parametrize(
    ("handler", "expected"),
    [(_answer_ok, None), (_answer_500, ApiServerError), (_answer_drop, ApiConnectionError)],
    ids=["success", "server-error", "dropped"],
)
def test_upload_closes_files_whatever_happens(
    make_client: ClientFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    handler: Any,
    expected: type[Exception] | None,
) -> None:
    items = items_in(tmp_path)
    opened = record_opened(monkeypatch)
    client = make_client(handler)
    if expected is None:
        client.upload(items)
    else:
        with pytest.raises(expected):
            client.upload(items)
    assert len(opened) == 3
    assert all(handle.closed for handle in opened)


def test_upload_streams_from_disk(make_client: ClientFactory, tmp_path: Path) -> None:
    """A 30 MB file goes out in chunks: the peak of Python allocations stays far below it."""
    size = 30 * 1024 * 1024
    big = tmp_path / "big.png"
    with big.open("wb") as out:
        out.write(image_bytes("PNG"))
        chunk = os.urandom(1024 * 1024)
        for _ in range(size // len(chunk)):
            out.write(chunk)
    received: list[int] = []

    class Draining(httpx.BaseTransport):
        """Consumes the body chunk by chunk, as a socket would (MockTransport reads it whole)."""

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            assert isinstance(request.stream, httpx.SyncByteStream)
            received.append(sum(len(piece) for piece in request.stream))
            return ok({"results": [image_json()]})

    client = RekaClient(base_url="http://127.0.0.1:9", api_key=API_KEY, transport=Draining())
    item = UploadItem(path=big, filename="big.png", content_type="image/png")
    tracemalloc.start()
    try:
        client.upload([item])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        client.close()
    assert received[0] > size
    assert peak < size // 10, peak


# --- get, list, delete, search ----------------------------------------------------------


def test_get(make_client: ClientFactory) -> None:
    client = make_client(lambda request: ok(image_json("abc", status=2)))
    image = client.get("abc")
    assert (image.image_id, image.indexing_status, image.request_id) == ("abc", 2, "req-ok")


@pytest.mark.parametrize("image_id", ["", None, 42])
def test_get_bad_id(make_client: ClientFactory, image_id: Any) -> None:
    with pytest.raises(ApiUsageError):
        make_client(lambda request: ok({})).get(image_id)


def test_list_sends_paging(make_client: ClientFactory) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return ok({"results": [image_json("a"), image_json("b")]})

    images = make_client(handler).list(limit=100, offset=7)
    assert [image.image_id for image in images] == ["a", "b"]
    assert dict(seen[0].url.params) == {"limit": "100", "offset": "7"}
    assert seen[0].method == "GET"
    assert seen[0].url.path == "/v1/images"


@pytest.mark.parametrize(
    ("limit", "offset"), [(0, 0), (101, 0), (True, 0), (20, -1), (20, 1.5), ("5", 0)]
)
def test_list_bad_paging_sends_nothing(make_client: ClientFactory, limit: Any, offset: Any) -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return ok({"results": []})

    with pytest.raises(ApiUsageError):
        make_client(handler).list(limit=limit, offset=offset)
    assert calls == []


def test_delete(make_client: ClientFactory) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return ok({"status": "success", "message": "deleted"})

    result = make_client(handler).delete("abc")
    assert result == DeleteResult(status="success", message="deleted")
    assert (seen[0].method, seen[0].url.path) == ("DELETE", "/v1/images/abc")


def test_search_body_omits_none(make_client: ClientFactory) -> None:
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        hit = {
            "image_id": "a",
            "image_url": "u",
            "upload_timestamp": 1.0,
            "score": 0.5,
            "image_metadata": {"caption": "red car", "detection_metadata": None},
        }
        return ok({"results": [hit]})

    client = make_client(handler)
    hits = client.search("red car")
    client.search("red car", max_results=3, search_mode="joined", image_weight=0.25, threshold=0)
    assert bodies[0] == {"query": "red car", "max_results": 10, "search_mode": "vision"}
    assert bodies[1] == {
        "query": "red car",
        "max_results": 3,
        "search_mode": "joined",
        "image_weight": 0.25,
        "threshold": 0,
    }
    assert hits[0].score == 0.5
    assert hits[0].image_metadata.caption == "red car"
    assert hits[0].image_metadata.camera_id is None


@pytest.mark.parametrize(
    "kwargs", [{"search_mode": "fuzzy"}, {"max_results": 0}, {"max_results": True}]
)
def test_search_bad_arguments(make_client: ClientFactory, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ApiUsageError):
        make_client(lambda request: ok({"results": []})).search("x", **kwargs)


def test_search_mode_enum_values() -> None:
    assert [mode.value for mode in SearchMode] == ["vision", "joined"]


# --- answers we cannot read ---------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b"\xff\xfe garbage",
        b"[]",
        b'{"image_id": "a"}',
        b'{"image_id": "a", "image_url": "u", "indexing_status": "soon", "upload_timestamp": 1}',
        b'{"image_id": null, "image_url": "u", "indexing_status": 1, "upload_timestamp": 1}',
    ],
)
def test_unreadable_answer(make_client: ClientFactory, content: bytes) -> None:
    client = make_client(
        lambda request: httpx.Response(200, content=content, headers={"X-Request-ID": "req-bad"})
    )
    with pytest.raises(ApiProtocolError) as caught:
        client.get("a")
    assert caught.value.request_id == "req-bad"
    assert caught.value.status == 200


def test_list_wrong_shape(make_client: ClientFactory) -> None:
    client = make_client(lambda request: ok({"results": [{"image_id": "a"}]}))
    with pytest.raises(ApiProtocolError, match=r"results\.0\.image_url"):
        client.list()


# --- request-side models -------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["", "image", "image/png\r\nX-Evil: 1", "image/ png"])
def test_upload_item_refuses_bad_content_type(content_type: str) -> None:
    with pytest.raises(ValidationError):
        UploadItem(path=Path("a.png"), filename="a.png", content_type=content_type)


def test_upload_item_refuses_non_json_metadata() -> None:
    with pytest.raises(ValidationError):
        UploadItem(
            path=Path("a.png"),
            filename="a.png",
            content_type="image/png",
            metadata={"when": object()},
        )


# --- the response observer -----------------------------------------------------------------


def _observed(handler: Any, observer: Any) -> RekaClient:
    return RekaClient(
        base_url="http://reka.test",
        api_key=API_KEY,
        transport=httpx.MockTransport(handler),
        on_response=observer,
    )


def test_the_observer_hears_every_answer_success_or_error() -> None:
    heard: list[tuple[str, str, int]] = []
    answers = iter([ok(image_json()), _answer_500(httpx.Request("GET", "http://x"))])
    with _observed(lambda request: next(answers), lambda *call: heard.append(call)) as client:
        client.get("img-1")
        with pytest.raises(ApiServerError):
            client.delete("img/2")
    assert heard == [("GET", "/v1/images/img-1", 200), ("DELETE", "/v1/images/img%2F2", 500)]


def test_no_answer_no_observation() -> None:
    heard: list[tuple[str, str, int]] = []
    client = _observed(_answer_drop, lambda *call: heard.append(call))
    with client, pytest.raises(ApiConnectionError):
        client.get("img-1")
    assert heard == []


def test_a_failing_observer_never_breaks_the_call() -> None:
    def observer(method: str, path: str, status: int) -> None:
        raise RuntimeError("counting is down")

    with _observed(lambda request: ok(image_json()), observer) as client:
        assert client.get("img-1").image_id == "img-1"


def test_from_settings_passes_the_observer_on() -> None:
    heard: list[tuple[str, str, int]] = []
    settings = RekaSettings(api_key=SecretStr(API_KEY), api_base_url="http://reka.test")
    with RekaClient.from_settings(
        settings,
        transport=httpx.MockTransport(lambda request: ok(image_json())),
        on_response=lambda *call: heard.append(call),
    ) as client:
        client.get("img-1")
    assert [status for _, _, status in heard] == [200]

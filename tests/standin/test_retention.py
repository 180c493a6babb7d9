"""Images that go away: the retention (Reka's developer tier deletes after 30 days),
the admin expiry of one image, and Delete Image.

A stand-in on loopback per test, driven by plain httpx; the injected clock
moves time, nothing sleeps. Whatever takes an image away, it is gone from
list, get (404 `not_found_error`), search and its `image_url`, in memory and
in a folder, and the server's memory and folder let go of its bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from typer.testing import CliRunner

from reka_ingest.cli.main import app as cli_app
from reka_ingest.standin import runner
from reka_ingest.standin.config import StandinConfig
from reka_ingest.standin.store import MemoryStore
from tests.standin.conftest import OTHER_KEY, Api, error_of
from tests.support.clock import Clock

DAY = 24 * 3600.0
CAPTION = {"caption": "a red bicycle by the gate"}


def _listed(api: Api) -> list[str]:
    response = api.http.get("/v1/images", params={"limit": 100})
    assert response.status_code == 200, response.text
    return [r["image_id"] for r in response.json()["results"]]


def _found_by_search(api: Api) -> list[str]:
    response = api.http.post("/v1/images/search", json={"query": "bicycle", "max_results": 100})
    assert response.status_code == 200, response.text
    return [r["image_id"] for r in response.json()["results"]]


def _assert_gone(api: Api, image: dict[str, Any]) -> None:
    """Gone from every view a client has, as Reka answers for an id it never had."""
    image_id = image["image_id"]
    assert image_id not in _listed(api)
    assert image_id not in _found_by_search(api)
    got = api.http.get(f"/v1/images/{image_id}")
    assert got.status_code == 404
    assert error_of(got)["type"] == "not_found_error"
    fetched = httpx.get(image["image_url"])
    assert fetched.status_code == 404
    assert error_of(fetched)["type"] == "not_found_error"
    assert api.http.get(f"/_standin/images/{image_id}").status_code == 404


def _assert_held(api: Api, image: dict[str, Any], data: bytes) -> None:
    image_id = image["image_id"]
    assert image_id in _listed(api)
    assert image_id in _found_by_search(api)
    assert api.http.get(f"/v1/images/{image_id}").status_code == 200
    assert httpx.get(image["image_url"]).content == data


@pytest.mark.parametrize("in_folder", [False, True], ids=["memory", "folder"])
def test_an_image_is_gone_once_its_retention_has_run_out(
    make_api: Callable[..., Api], clock: Clock, jpegs: list[bytes], tmp_path: Path, in_folder: bool
) -> None:
    folder = tmp_path / "images" if in_folder else None
    api = make_api(retention=30 * DAY, storage_dir=folder)
    first = api.upload_ok([jpegs[0]], metas=[CAPTION])[0]
    clock.advance(DAY)
    second = api.upload_ok([jpegs[1]], metas=[CAPTION])[0]

    clock.advance(29 * DAY - 0.001)  # the first has a millisecond left
    _assert_held(api, first, jpegs[0])
    assert api.admin(f"images/{first['image_id']}")["expires_at"] == first["upload_timestamp"] + (
        30 * DAY
    )

    clock.advance(0.001)  # 30 days after its upload, to the second
    _assert_gone(api, first)
    _assert_held(api, second, jpegs[1])
    assert _listed(api) == [second["image_id"]]
    stats = api.admin("stats")
    assert (stats["images_stored"], stats["images_expired"], stats["images_deleted"]) == (1, 1, 0)
    if folder is not None:  # its bytes and sidecar are gone from the folder too
        assert sorted(p.name for p in folder.iterdir()) == [
            f"{second['image_id']}.bin",
            f"{second['image_id']}.json",
        ]

    clock.advance(DAY)
    _assert_gone(api, second)
    assert api.admin("stats")["images_expired"] == 2
    if folder is not None:
        assert list(folder.iterdir()) == []


def test_no_retention_keeps_images_for_ever(api: Api, clock: Clock, jpegs: list[bytes]) -> None:
    image = api.upload_ok([jpegs[0]], metas=[CAPTION])[0]
    assert api.admin(f"images/{image['image_id']}")["expires_at"] is None
    clock.advance(10 * 365 * DAY)
    _assert_held(api, image, jpegs[0])


def test_expired_images_leave_the_list_pages_in_order(
    make_api: Callable[..., Api], clock: Clock, jpegs: list[bytes]
) -> None:
    api = make_api(retention=100.0)
    ids = []
    for data in jpegs[:10]:
        ids.append(api.upload_ok([data])[0]["image_id"])
        clock.advance(10.0)
    # Upload i happened at 10*i s; now is 100 s: the first has just gone.
    assert _listed(api) == ids[1:]
    clock.advance(35.0)  # 135 s: uploads at 0..30 s gone
    assert _listed(api) == ids[4:]
    page = api.http.get("/v1/images", params={"limit": 2, "offset": 1}).json()["results"]
    assert [r["image_id"] for r in page] == ids[5:7]


def test_each_image_keeps_the_retention_it_was_uploaded_under(
    make_api: Callable[..., Api], clock: Clock, jpegs: list[bytes]
) -> None:
    """A drill shortens the retention for a batch, then sets it back: only that batch expires."""
    api = make_api()
    kept = api.upload_ok([jpegs[0]])[0]
    assert api.faults(retention=5.0)["retention"] == 5.0
    short = api.upload_ok(jpegs[1:4])
    api.faults(retention=0.0)
    later = api.upload_ok([jpegs[4]])[0]
    clock.advance(5.0)
    assert _listed(api) == [kept["image_id"], later["image_id"]]
    for image in short:
        assert api.http.get(f"/v1/images/{image['image_id']}").status_code == 404
    assert api.admin("stats")["images_expired"] == 3

    api.faults(retention=60.0)
    response = api.http.post("/_standin/reset")
    assert response.status_code == 200
    assert api.admin("faults")["retention"] == 0.0  # back to how the server was started


def test_a_bad_retention_is_refused(api: Api) -> None:
    for value in (-1, "soon", None):
        response = api.http.post("/_standin/faults", json={"retention": value})
        assert response.status_code == 400, value
        assert error_of(response)["type"] == "validation_error"
    assert api.admin("faults")["retention"] == 0.0


def test_expired_images_let_go_of_their_bytes_in_memory(
    make_api: Callable[..., Api], clock: Clock, jpegs: list[bytes]
) -> None:
    api = make_api(retention=1.0)
    store = api.server.state.store
    assert isinstance(store, MemoryStore)
    images = api.upload_ok(jpegs[:20])
    api.http.delete(f"/v1/images/{images[0]['image_id']}")  # leaves its expiry entry behind
    assert len(store._blobs) == 19
    clock.advance(1.0)
    assert _listed(api) == []
    assert (len(store), len(store._blobs), len(store._expiry)) == (0, 0, 0)
    assert api.admin("stats")["images_expired"] == 19  # the deleted one is not counted twice


@pytest.mark.parametrize("in_folder", [False, True], ids=["memory", "folder"])
def test_the_admin_expiry_forgets_one_image_as_the_retention_would(
    make_api: Callable[..., Api], jpegs: list[bytes], tmp_path: Path, in_folder: bool
) -> None:
    folder = tmp_path / "images" if in_folder else None
    api = make_api(storage_dir=folder)
    images = api.upload_ok(jpegs[:3], metas=[CAPTION] * 3)
    target = images[1]

    response = api.http.post(f"/_standin/images/{target['image_id']}/expire")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success" and target["image_id"] in body["message"]

    _assert_gone(api, target)
    for image, data in ((images[0], jpegs[0]), (images[2], jpegs[2])):
        _assert_held(api, image, data)
    stats = api.admin("stats")
    assert (stats["images_stored"], stats["images_expired"], stats["images_deleted"]) == (2, 1, 0)
    assert stats["requests"]["admin.expire"] == {"200": 1}
    if folder is not None:
        assert not any(p.name.startswith(target["image_id"]) for p in folder.iterdir())

    again = api.http.post(f"/_standin/images/{target['image_id']}/expire")
    assert again.status_code == 404
    assert error_of(again)["type"] == "not_found_error"
    assert api.http.post("/_standin/images/no-such-image/expire").status_code == 404


def test_the_admin_expiry_needs_a_key_but_is_never_faulted(
    make_api: Callable[..., Api], jpegs: list[bytes]
) -> None:
    api = make_api()
    image_id = api.upload_ok([jpegs[0]])[0]["image_id"]
    api.faults(fail_share=1.0)  # every /v1 request now fails; the admin surface does not
    path = f"/_standin/images/{image_id}/expire"

    for headers in ({}, {"X-Api-Key": "wrong"}):
        response = httpx.post(f"{api.server.base_url}{path}", headers=headers)
        assert response.status_code == 401
        assert error_of(response)["type"] == "authentication_error"
    response = httpx.post(
        f"{api.server.base_url}{path}", headers={"Authorization": f"Bearer {OTHER_KEY}"}
    )
    assert response.status_code == 200, response.text
    assert api.http.get(f"/_standin/images/{image_id}").status_code == 404
    assert api.http.get(f"{path}").status_code == 404  # POST only


@pytest.mark.parametrize("in_folder", [False, True], ids=["memory", "folder"])
def test_delete_image_takes_it_from_every_view(
    make_api: Callable[..., Api], jpegs: list[bytes], tmp_path: Path, in_folder: bool
) -> None:
    folder = tmp_path / "images" if in_folder else None
    api = make_api(storage_dir=folder)
    images = api.upload_ok(jpegs[:2], metas=[CAPTION] * 2)

    response = api.http.delete(f"/v1/images/{images[0]['image_id']}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"status", "message"}
    assert body["status"] == "success"

    _assert_gone(api, images[0])
    _assert_held(api, images[1], jpegs[1])
    stats = api.admin("stats")
    assert (stats["images_stored"], stats["images_deleted"], stats["images_expired"]) == (1, 1, 0)
    assert stats["requests"]["delete"] == {"200": 1}
    if folder is not None:
        assert sorted(p.name for p in folder.iterdir()) == [
            f"{images[1]['image_id']}.bin",
            f"{images[1]['image_id']}.json",
        ]
    again = api.http.delete(f"/v1/images/{images[0]['image_id']}")
    assert again.status_code == 404
    assert error_of(again)["type"] == "not_found_error"
    # An image already expired is as unknown to Delete Image as one never uploaded.
    api.http.post(f"/_standin/images/{images[1]['image_id']}/expire")
    assert api.http.delete(f"/v1/images/{images[1]['image_id']}").status_code == 404


def test_a_restarted_folder_stand_in_keeps_each_images_expiry(
    tmp_path: Path, clock: Clock, jpegs: list[bytes]
) -> None:
    """The expiry is in each image's sidecar: what ran out while the server was down is gone."""
    settings: dict[str, Any] = {
        "api_keys": ("k",),
        "port": 0,
        "storage_dir": tmp_path,
        "retention": 60.0,
    }
    headers = {"X-Api-Key": "k"}
    files = [("images", ("a.jpg", jpegs[0], "image/jpeg"))]
    meta = {"metadata": '{"requests": [{"metadata": {}}]}'}
    with runner.serve_in_thread(StandinConfig(**settings), clock=clock) as server:
        url = f"{server.base_url}/v1/images/upload"
        old = httpx.post(url, headers=headers, files=files, data=meta).json()["results"][0]
        clock.advance(30.0)
        young = httpx.post(url, headers=headers, files=files, data=meta).json()["results"][0]

    clock.advance(40.0)  # 70 s after the first upload, 40 s after the second
    settings["retention"] = 0.0  # a restart with another retention changes no stored image
    with runner.serve_in_thread(StandinConfig(**settings), clock=clock) as server:
        listed = httpx.get(f"{server.base_url}/v1/images", headers=headers).json()["results"]
        assert [r["image_id"] for r in listed] == [young["image_id"]]
        assert not (tmp_path / f"{old['image_id']}.bin").exists()
        # Each restart listens on a new port (port 0): the URLs of now name it.
        old_url, young_url = (server.base_url + urlsplit(i["image_url"]).path for i in (old, young))
        assert httpx.get(old_url).status_code == 404
        assert httpx.get(young_url).content == jpegs[0]
        clock.advance(20.0)
        assert httpx.get(young_url).status_code == 404
    assert list(tmp_path.iterdir()) == []


def test_retention_is_a_setting_an_env_var_and_a_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    assert StandinConfig().retention == 0.0
    monkeypatch.setenv("STANDIN_RETENTION", "2592000")
    assert StandinConfig().retention == 30 * DAY
    assert StandinConfig().fault_knobs().retention == 30 * DAY

    started: list[StandinConfig] = []
    monkeypatch.setattr(runner, "serve", started.append)
    cli = CliRunner()
    assert cli.invoke(cli_app, ["fake-api", "--retention", "2.5"]).exit_code == 0
    assert cli.invoke(cli_app, ["fake-api"]).exit_code == 0
    assert [config.retention for config in started] == [2.5, 30 * DAY]  # the flag wins

    refused = cli.invoke(cli_app, ["fake-api", "--retention", "-1"])
    assert refused.exit_code == 2
    assert "--retention / STANDIN_RETENTION" in refused.output

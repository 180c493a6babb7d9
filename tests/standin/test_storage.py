"""Folder storage: bytes on disk, served back, kept across a restart, removed on delete."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from reka_ingest.standin.config import StandinConfig
from reka_ingest.standin.runner import serve_in_thread
from tests.standin.conftest import KEY
from tests.support.clock import Clock
from tests.support.images import image_bytes


def test_folder_storage_survives_a_restart(tmp_path: Path, clock: Clock) -> None:
    data = [image_bytes(1), image_bytes(2)]
    config = StandinConfig(api_keys=(KEY,), port=0, storage_dir=tmp_path / "images")
    headers = {"X-Api-Key": KEY}
    with serve_in_thread(config, clock=clock) as server:
        files = [("images", (f"{i}.jpg", d, "image/jpeg")) for i, d in enumerate(data)]
        meta = '{"requests": [{"metadata": {"caption": "a"}}, {"metadata": {"caption": "b"}}]}'
        response = httpx.post(
            f"{server.base_url}/v1/images/upload",
            headers=headers,
            files=files,
            data={"metadata": meta},
        )
        assert response.status_code == 200, response.text
        ids = [r["image_id"] for r in response.json()["results"]]
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == sorted(
        f"{i}{suffix}" for i in ids for suffix in (".bin", ".json")
    )
    assert (tmp_path / "images" / f"{ids[0]}.bin").read_bytes() == data[0]

    with serve_in_thread(config, clock=clock) as server:
        listed = httpx.get(f"{server.base_url}/v1/images", headers=headers).json()["results"]
        assert [r["image_id"] for r in listed] == ids
        assert httpx.get(listed[1]["image_url"]).content == data[1]
        detail = httpx.get(f"{server.base_url}/_standin/images/{ids[0]}", headers=headers).json()
        assert detail["metadata"] == {"caption": "a"}
        deleted = httpx.delete(f"{server.base_url}/v1/images/{ids[0]}", headers=headers)
        assert deleted.status_code == 200
    assert not (tmp_path / "images" / f"{ids[0]}.bin").exists()
    assert (tmp_path / "images" / f"{ids[1]}.bin").exists()


def test_folder_storage_keeps_input_order_within_one_request(tmp_path: Path, clock: Clock) -> None:
    """Images of one request share a timestamp; the order must still survive a restart."""
    data = [image_bytes(seed) for seed in range(30)]
    config = StandinConfig(api_keys=(KEY,), port=0, storage_dir=tmp_path)
    headers = {"X-Api-Key": KEY}
    with serve_in_thread(config, clock=clock) as server:
        files = [("images", (f"{i}.jpg", d, "image/jpeg")) for i, d in enumerate(data)]
        meta = json.dumps([{"metadata": {}}] * len(data))
        response = httpx.post(
            f"{server.base_url}/v1/images/upload",
            headers=headers,
            files=files,
            data={"metadata": meta},
        )
        ids = [r["image_id"] for r in response.json()["results"]]
    with serve_in_thread(config, clock=clock) as server:
        listed = httpx.get(
            f"{server.base_url}/v1/images", params={"limit": 100}, headers=headers
        ).json()["results"]
    assert [r["image_id"] for r in listed] == ids

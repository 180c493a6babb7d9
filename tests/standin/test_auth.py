"""Either auth header works; a missing or unknown key is a 401 envelope."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from reka_ingest.core.constants import STANDIN_DEV_API_KEY
from reka_ingest.standin.config import StandinConfig
from reka_ingest.standin.runner import serve_in_thread
from tests.standin.conftest import KEY, OTHER_KEY, Api, error_of


@pytest.mark.parametrize("key", [KEY, OTHER_KEY])
def test_x_api_key_and_bearer_both_authenticate(api: Api, key: str) -> None:
    url = f"{api.server.base_url}/v1/images"
    assert httpx.get(url, headers={"X-Api-Key": key}).status_code == 200
    assert httpx.get(url, headers={"Authorization": f"Bearer {key}"}).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Api-Key": "wrong"},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {KEY}"},
        {"X-Api-Key": STANDIN_DEV_API_KEY},  # keys were configured: the dev key is off
    ],
)
def test_missing_or_unknown_key_is_401(api: Api, headers: dict[str, str]) -> None:
    for method, path in (
        ("GET", "/v1/images"),
        ("POST", "/v1/images/upload"),
        ("POST", "/v1/images/search"),
        ("GET", "/_standin/stats"),
    ):
        response = httpx.request(method, f"{api.server.base_url}{path}", headers=headers)
        assert response.status_code == 401, (method, path)
        assert error_of(response)["type"] == "authentication_error"


def test_without_configured_keys_the_dev_key_works(make_api: Callable[..., Api]) -> None:
    with serve_in_thread(StandinConfig(port=0)) as server:
        url = f"{server.base_url}/v1/images"
        assert httpx.get(url, headers={"X-Api-Key": STANDIN_DEV_API_KEY}).status_code == 200
        assert httpx.get(url, headers={"X-Api-Key": KEY}).status_code == 401

"""Search: indexed images only, ranked by caption and class names, deterministic."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reka_ingest.standin.metadata import SECURITY_KEYS
from tests.standin.conftest import Api, error_of
from tests.support.clock import Clock

RESULT_KEYS = {"image_id", "image_url", "image_metadata", "upload_timestamp", "score"}


def _det(*names: str) -> list[dict[str, Any]]:
    return [{"class_name": n, "bounding_box": [0, 0, 10, 10]} for n in names]


def _search(api: Api, **body: Any) -> list[dict[str, Any]]:
    response = api.http.post("/v1/images/search", json=body)
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"results"}
    results: list[dict[str, Any]] = response.json()["results"]
    return results


def test_ranked_by_caption_and_class_name(api: Api, jpegs: list[bytes]) -> None:
    metas = [
        {"caption": "a red car parked outside", "detection_metadata": _det("car")},  # both
        {"caption": "an empty street", "detection_metadata": _det("car", "person")},  # class
        {"caption": "the red cars race"},  # caption only
        {"caption": "a dog", "detection_metadata": _det("dog")},  # nothing
    ]
    ids = [r["image_id"] for r in api.upload_ok(jpegs[:4], metas=metas)]
    results = _search(api, query="car")
    assert [r["image_id"] for r in results] == ids[:3]
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 < s <= 1.0 for s in scores)
    assert scores[0] == 1.0
    assert _search(api, query="car") == results  # deterministic

    top = results[0]
    assert set(top) == RESULT_KEYS
    assert set(top["image_metadata"]) == set(SECURITY_KEYS)
    assert top["image_metadata"]["camera_id"] is None
    assert top["image_metadata"]["detection_metadata"][0] == {
        "class_name": "car",
        "confidence": None,
        "bounding_box": [0, 0, 10, 10],
        "is_license_plate": False,
        "license_plate_number": None,
        "ncic_category": None,
    }


def test_max_results_and_threshold(api: Api, jpegs: list[bytes]) -> None:
    metas = [{"caption": "red car"}, {"caption": "red bus"}, {"caption": "blue car"}]
    api.upload_ok(jpegs[:3], metas=metas)
    assert len(_search(api, query="red car")) == 3
    assert len(_search(api, query="red car", max_results=1)) == 1
    # Caption-only matches: both words 0.6, one word 0.3.
    strict = _search(api, query="red car", threshold=0.5)
    assert [r["score"] for r in strict] == [0.6]
    assert _search(api, query="red car", threshold=0.9) == []


def test_only_finished_indexed_images_are_searchable(
    make_api: Callable[..., Api], clock: Clock, jpegs: list[bytes]
) -> None:
    api = make_api(index_delay=10.0)
    meta = [{"caption": "truck"}]
    api.upload_ok([jpegs[0]], metas=meta)
    api.upload_ok([jpegs[1]], metas=meta, index=False)
    assert _search(api, query="truck") == []  # still indexing
    clock.advance(10)
    assert len(_search(api, query="truck")) == 1  # the index:false one never shows


def test_bad_search_requests_are_400(api: Api) -> None:
    for body, param in (
        ({}, "query"),
        ({"query": ""}, "query"),
        ({"query": "x", "max_results": 0}, "max_results"),
        ({"query": "x", "search_mode": "audio"}, "search_mode"),
        ({"query": "x", "threshold": "high"}, "threshold"),
    ):
        response = api.http.post("/v1/images/search", json=body)
        assert response.status_code == 400, body
        assert error_of(response)["param"] == param

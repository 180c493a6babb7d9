"""One request with 50 images: results come back in input order."""

from __future__ import annotations

import hashlib

from tests.standin.conftest import Api


def test_fifty_images_come_back_in_input_order(api: Api, jpegs: list[bytes]) -> None:
    images = jpegs[:50]
    names = [f"photo-{i:02d}.jpg" for i in range(50)]
    metas = [
        {"camera_id": f"cam-{i}", "recorded_timestamp_utc": 1_700_000_000 + i} for i in range(50)
    ]
    results = api.upload_ok(images, metas=metas, names=names)
    assert len(results) == 50
    for i, result in enumerate(results):
        detail = api.admin(f"images/{result['image_id']}")
        assert detail["filename"] == names[i]
        assert detail["sha256"] == hashlib.sha256(images[i]).hexdigest()
        assert detail["size"] == len(images[i])
        assert detail["metadata"] == metas[i]
        assert detail["index"] is True
        assert detail["content_type"] == "image/jpeg"
    stats = api.admin("stats")
    assert stats["images_received"] == 50
    assert stats["uploads_accepted"] == 1
    assert stats["requests"]["upload"] == {"200": 1}

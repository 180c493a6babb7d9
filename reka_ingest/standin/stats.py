"""Counters for `GET /_standin/stats`: what a drill or benchmark in another
process needs to check the server's side of the story."""

from __future__ import annotations

from collections import Counter
from typing import Any


class Stats:
    """Requests by endpoint and status, upload totals, URL fetches and images removed."""

    def __init__(self) -> None:
        self.requests: dict[str, Counter[str]] = {}
        self.uploads_accepted = 0  # upload requests answered 200
        self.images_received = 0  # images in those requests
        self.bytes_received = 0  # image bytes in those requests
        self.connections_dropped = 0
        self.images_deleted = 0  # by Delete Image
        self.images_expired = 0  # by the retention, or POST /_standin/images/{id}/expire
        self.urls_fetched = 0  # image URLs of URL uploads whose bytes arrived
        self.url_fetches_failed = 0  # image URLs that gave no image (the upload was refused)

    def count(self, endpoint: str, status: int | str) -> None:
        self.requests.setdefault(endpoint, Counter())[str(status)] += 1

    def upload(self, images: int, nbytes: int) -> None:
        self.uploads_accepted += 1
        self.images_received += images
        self.bytes_received += nbytes

    def snapshot(self, images_stored: int) -> dict[str, Any]:
        return {
            "requests": {name: dict(counts) for name, counts in sorted(self.requests.items())},
            "uploads_accepted": self.uploads_accepted,
            "images_received": self.images_received,
            "bytes_received": self.bytes_received,
            "connections_dropped": self.connections_dropped,
            "images_deleted": self.images_deleted,
            "images_expired": self.images_expired,
            "urls_fetched": self.urls_fetched,
            "url_fetches_failed": self.url_fetches_failed,
            "images_stored": images_stored,
        }

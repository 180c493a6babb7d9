"""Indexing status, computed lazily from upload time and the clock.

No background task moves images along: an image uploaded at `t` with index
delay `d` reports 1 (in progress) until `t + d`, then 2 (indexed) or 3
(failed). Whether it fails is fixed at upload from a hash of its id and the
server's seed, so the same id under the same seed always ends the same way,
and a fail share of 1.0 fails every image.
"""

from __future__ import annotations

import hashlib
from typing import Final

from reka_ingest.core.constants import IndexingStatus

_HASH_BYTES: Final = 8
_HASH_SPAN: Final = float(1 << (8 * _HASH_BYTES))


def will_fail(image_id: str, seed: int | None, share: float) -> bool:
    """Deterministic per (seed, image id): True for about `share` of all ids."""
    if share <= 0.0:
        return False
    if share >= 1.0:
        return True
    digest = hashlib.sha256(f"{seed}:{image_id}".encode()).digest()[:_HASH_BYTES]
    return int.from_bytes(digest, "big") / _HASH_SPAN < share


def status_at(*, index: bool, ready_at: float, fails: bool, now: float) -> IndexingStatus:
    """The status an image reports at `now`."""
    if not index:
        return IndexingStatus.NOT_INDEXED
    if now < ready_at:
        return IndexingStatus.IN_PROGRESS
    return IndexingStatus.FAILED if fails else IndexingStatus.INDEXED

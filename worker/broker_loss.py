"""Whether the broker lost what it held: the messages of queued batches.

Redis started again without its data (no persistence, a fresh container), or
flushed, holds none of the `upload_batch` messages sent before. The ledger still
has those batches `queued`, and without this they would wait
INGEST_REQUEUE_AFTER (ten minutes by default) as any lost message does.

A marker key, set in the broker's Redis, lives and dies with its data: with
persistence, key and messages survive a restart together; when the data goes,
both go. So the beat sweep sets it if absent (`SET NX`) at every tick: when that
succeeds, whatever was sent before is gone, and every queued batch is sent again
(`reka_ingest.ledger.reconcile.mark_all_unsent`). A message sent twice is harmless:
the claim admits one run. The first sweep of a new broker does the same, once.
"""

from __future__ import annotations

import secrets
import time
from typing import Final

import redis

# The marker: no TTL, never deleted by the service.
MARKER_KEY: Final = "reka_ingest:broker_marker"


def lost_since_last_look(client: redis.Redis[bytes], *, now: float | None = None) -> bool:
    """Whether the broker's data is new since the last look (set the marker if so).

    Raises `redis.RedisError` when the broker does not answer (nothing is known)."""
    stamp = f"{time.time() if now is None else now:.3f} {secrets.token_hex(4)}"
    return bool(client.set(MARKER_KEY, stamp, nx=True))

"""Counters that many worker processes on many machines add to: kept in Redis
hashes (HINCRBY), never in process memory, so every scrape of any metrics
endpoint sees the sum over the whole deployment.

What is counted here is what the ledger cannot tell afterwards: each API
response by endpoint and status (429s among them), and each batch the beat
sweep sent again. Everything else is derived from the ledger and Redis at
scrape time (`reka_ingest.metrics.collector`).

A worker process's runtime owns one `CounterSink` and hands its `on_response`
to the Reka client as the client's observer; code without a sink counts
nothing. Counting never breaks the work it counts: a Redis error is logged
and dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import redis
from sqlalchemy import func, select

from reka_ingest.core.constants import REDIS_TIMEOUT
from reka_ingest.core.logs import get_logger
from reka_ingest.ledger.db import Ledger
from reka_ingest.ledger.schema import Batch, File

log = get_logger(__name__)

# Every Redis key the metrics read or write, named once.
API_RESPONSES_KEY: Final = "reka_ingest:metrics:api_responses"  # field "<endpoint>:<status>"
RECONCILE_KEY: Final = "reka_ingest:metrics:reconcile"  # fields "batches:<why>", "files:<why>"
# Why the sweep sent a batch: see `why_resent`, and `stranded` for UNBATCHED.
UNBATCHED: Final = "unbatched"
RECONCILE_WHYS: Final = ("lease_expired", "lost_message", "deferred_due", UNBATCHED)
# The shared API budget (core.constants.BUDGET_KEY) is read by reka_ingest.metrics.budget.


def redis_client(url: str) -> redis.Redis[bytes]:
    return redis.Redis.from_url(
        url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
    )


def endpoint_of(method: str, path: str) -> str:
    """The API endpoint a request went to, as a short label (never the image id)."""
    parts = [p for p in path.split("/") if p]
    tail = parts[parts.index("images") + 1 :] if "images" in parts else parts
    if method == "POST" and tail == ["upload"]:
        return "upload"
    if method == "POST" and tail == ["search"]:
        return "search"
    if method == "GET" and not tail:
        return "list"
    if method == "GET":
        return "get"
    if method == "DELETE":
        return "delete"
    return "other"


@dataclass
class CounterSink:
    """The Redis side of the counters; one per worker process (its runtime's)."""

    client: redis.Redis[bytes]

    @classmethod
    def connect(cls, url: str) -> CounterSink:
        """A sink counting into the Redis at `url` (connected on first count)."""
        return cls(redis_client(url))

    def on_response(self, method: str, path: str, status: int) -> None:
        """Count one API response: the Reka client's observer."""
        self.api_response(endpoint_of(method, path), status)

    def api_response(self, endpoint: str, status: int) -> None:
        self._incr(API_RESPONSES_KEY, {f"{endpoint}:{status}": 1})

    def resent(self, ledger: Ledger, batch_ids: Sequence[int]) -> None:
        """Count the batches the beat sweep sent again, and their files, by why."""
        if batch_ids:
            self.reconciled(resent_by_why(ledger, batch_ids))

    def stranded(self, ledger: Ledger, batch_ids: Sequence[int]) -> None:
        """Count the batches the beat sweep made for queued files left without one,
        and their files, as why `unbatched`."""
        if batch_ids:
            files = sum(n for _, n in resent_by_why(ledger, batch_ids).values())
            self.reconciled({UNBATCHED: (len(batch_ids), files)})

    def reconciled(self, by_why: dict[str, tuple[int, int]]) -> None:
        """`by_why`: why (see `why_resent`) -> (batches, files) the sweep sent again."""
        fields: dict[str, int] = {}
        for why, (batches, files) in by_why.items():
            fields[f"batches:{why}"] = batches
            fields[f"files:{why}"] = files
        self._incr(RECONCILE_KEY, fields)

    def close(self) -> None:
        self.client.close()

    def _incr(self, key: str, fields: dict[str, int]) -> None:
        if not fields:
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            for field, amount in fields.items():
                pipe.hincrby(key, field, amount)
            pipe.execute()
        except redis.RedisError as err:
            log.warning("metrics_counter_failed", key=key, error=type(err).__name__)


def why_resent(state: str, last_error: str | None) -> str:
    """Why the sweep sent a batch again, judged from its row after the sweep.

    `lease_expired`: its worker held it past the lease (died or hung);
    `deferred_due`: it waited in the ledger (backoff, quota) and its time came;
    `lost_message`: queued, never taken for INGEST_REQUEUE_AFTER seconds.
    A batch that was deferred once and later lost its message counts as
    `deferred_due` (the row keeps its last error): the split is a close guess.
    """
    if state == "uploading":
        return "lease_expired"
    return "deferred_due" if last_error else "lost_message"


def resent_by_why(ledger: Ledger, batch_ids: Sequence[int]) -> dict[str, tuple[int, int]]:
    """Why each batch the sweep sent again was sent: why -> (batches, files)."""
    with ledger.read() as s:
        rows = s.execute(
            select(Batch.state, Batch.last_error, func.count(File.id))
            .select_from(Batch)
            .outerjoin(File, File.batch_id == Batch.id)
            .where(Batch.id.in_(list(batch_ids)))
            .group_by(Batch.id, Batch.state, Batch.last_error)
        ).all()
    by_why: dict[str, tuple[int, int]] = {}
    for state, last_error, files in rows:
        why = why_resent(str(state), last_error)
        batches, total = by_why.get(why, (0, 0))
        by_why[why] = (batches + 1, total + int(files))
    return by_why

"""The Prometheus view of the service: what Flower lacks.

Everything is read at scrape time, from the ledger (files by state, by
origin, by failure reason; batches by state; the oldest active file;
drop-to-indexed latency)
and from Redis (queue depth; the counters that worker processes add to in
`reka_ingest.metrics.counters`; the shared API budget). Nothing lives in this
process's memory, so any number of endpoints, and any number of worker
processes on any number of machines, agree.

A part that cannot be read (Redis down, the database unreachable) is reported
by `reka_ingest_up{part=...}` = 0 and its metrics are left out of that scrape;
the rest still answer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Final
from wsgiref.simple_server import WSGIServer

import redis
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError

from reka_ingest.core.constants import BUDGET_KEY
from reka_ingest.core.logs import get_logger
from reka_ingest.core.places import port_taken
from reka_ingest.core.queues import QUEUES
from reka_ingest.core.settings import Settings
from reka_ingest.core.states import ACTIVE, BatchState, FileState, Origin
from reka_ingest.ledger import Ledger, open_ledger
from reka_ingest.ledger.counts import (
    LATENCY_BUCKETS,
    batches_by_state,
    failed_by_reason,
    files_by_origin,
    files_by_state,
    indexed_latency,
)
from reka_ingest.ledger.queries import oldest_by_state
from reka_ingest.metrics.budget import read_budget
from reka_ingest.metrics.counters import (
    API_RESPONSES_KEY,
    RECONCILE_KEY,
    RECONCILE_WHYS,
    redis_client,
)
from reka_ingest.metrics.server_check import ServerCheck, read_server_check

log = get_logger(__name__)

PREFIX: Final = "reka_ingest"
DEFAULT_PORT: Final = 9464
# kombu's Redis transport keeps one list per priority step: "q", "q\x06\x163", ...
KOMBU_PRIORITY_SEP: Final = "\x06\x16"
KOMBU_PRIORITY_STEPS: Final = (3, 6, 9)
KOMBU_UNACKED_KEY: Final = "unacked"
ORIGINS: Final = tuple(str(origin) for origin in Origin)


def queue_depth(client: redis.Redis[bytes], queue: str) -> int:
    """Messages waiting in one Celery queue on Redis (every priority list)."""
    keys = [queue, *(f"{queue}{KOMBU_PRIORITY_SEP}{p}" for p in KOMBU_PRIORITY_STEPS)]
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.llen(key)
    return sum(int(n) for n in pipe.execute())


class IngestCollector(Collector):
    """A custom collector: every value computed when Prometheus asks."""

    def __init__(
        self,
        ledger: Ledger,
        client: redis.Redis[bytes],
        *,
        clock: Callable[[], float],
    ) -> None:
        self.ledger = ledger
        self.redis = client
        self.clock = clock

    def describe(self) -> Iterable[Metric]:
        return []  # collected fresh at each scrape; nothing to pre-register

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            f"{PREFIX}_up",
            "Whether this scrape could read each part (1) or not (0).",
            labels=["part"],
        )
        ledger_metrics: list[Metric] = []
        try:
            ledger_metrics = list(self._from_ledger())
        except SQLAlchemyError as err:
            log.warning("metrics_ledger_unreadable", error=type(err).__name__)
        redis_metrics: list[Metric] = []
        try:
            redis_metrics = list(self._from_redis())
        except redis.RedisError as err:
            log.warning("metrics_redis_unreadable", error=type(err).__name__)
        up.add_metric(["ledger"], 1.0 if ledger_metrics else 0.0)
        up.add_metric(["redis"], 1.0 if redis_metrics else 0.0)
        yield up
        yield from ledger_metrics
        yield from redis_metrics

    # --- the ledger -------------------------------------------------------------

    def _from_ledger(self) -> Iterator[Metric]:
        """Every query here costs the same at any ledger size (tests/ledger/
        test_query_plans.py, bench/scale.py): files by state, origin and failure
        reason, the drop-to-indexed histogram and batches by state from the counts
        tables (reka_ingest.ledger.counts), the oldest active file from an index probe."""
        now = self.clock()
        with self.ledger.read() as s:
            by_state = files_by_state(s)
            by_origin = files_by_origin(s)
            by_reason = {str(reason): n for reason, n in failed_by_reason(s).items()}
            batches = batches_by_state(s)
            oldest = min(
                (seen for _, seen in oldest_by_state(s, sorted(ACTIVE)).values()), default=None
            )
            latency = indexed_latency(s)

        files = GaugeMetricFamily(
            f"{PREFIX}_files", "Files in the ledger by state.", labels=["state"]
        )
        for state in FileState:
            files.add_metric([state.value], float(by_state.get(state.value, 0)))
        yield files

        failed = GaugeMetricFamily(
            f"{PREFIX}_files_failed", "Failed files by reason code.", labels=["reason"]
        )
        for reason, count in sorted(by_reason.items()):
            failed.add_metric([reason], float(count))
        yield failed

        found = CounterMetricFamily(
            f"{PREFIX}_files_found",
            "Files recorded, by how they were found: event (watchdog), scan (the periodic "
            "or startup scan), backfill (reka-ingest scan DIR), recovery (found in the work "
            "area after a crash).",
            labels=["origin"],
        )
        for origin in sorted({*ORIGINS, *by_origin}):
            found.add_metric([origin], float(by_origin.get(origin, 0)))
        yield found

        batch_gauge = GaugeMetricFamily(f"{PREFIX}_batches", "Batches by state.", labels=["state"])
        for bstate in BatchState:
            batch_gauge.add_metric([bstate.value], float(batches.get(bstate.value, 0)))
        yield batch_gauge

        yield GaugeMetricFamily(
            f"{PREFIX}_oldest_active_file_age_seconds",
            "Seconds since the oldest file not yet final (queued, uploading, indexing) "
            "was seen; 0 when there is none.",
            value=max(0.0, now - oldest) if oldest is not None else 0.0,
        )

        buckets = [
            (_bucket_label(b), float(n))
            for b, n in zip(LATENCY_BUCKETS, latency.cumulative, strict=True)
        ]
        buckets.append(("+Inf", float(latency.count)))
        yield HistogramMetricFamily(
            f"{PREFIX}_drop_to_indexed_seconds",
            "Seconds from a file being seen in the inbox to Reka reporting it indexed.",
            buckets=buckets,
            sum_value=latency.total_seconds,
        )

    # --- Redis --------------------------------------------------------------------

    def _from_redis(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            f"{PREFIX}_queue_depth",
            "Messages waiting in each Celery queue (Redis LLEN).",
            labels=["queue"],
        )
        for queue in QUEUES:
            depth.add_metric([queue], float(queue_depth(self.redis, queue)))
        unacked = GaugeMetricFamily(
            f"{PREFIX}_queue_unacked",
            "Messages taken by a worker and not yet acknowledged (all queues).",
            value=float(self.redis.hlen(KOMBU_UNACKED_KEY)),
        )

        responses = CounterMetricFamily(
            f"{PREFIX}_api_responses",
            "Reka API responses by endpoint and HTTP status, from every worker process.",
            labels=["endpoint", "status"],
        )
        rate_limited = 0
        for field, value in sorted(_hash(self.redis, API_RESPONSES_KEY).items()):
            endpoint, _, status = field.rpartition(":")
            responses.add_metric([endpoint, status], float(value))
            if status == "429":
                rate_limited += value
        throttled = CounterMetricFamily(
            f"{PREFIX}_api_rate_limited",
            "Reka API answers 429 (rate limited), every endpoint, every worker process.",
            value=float(rate_limited),
        )

        reconcile = _hash(self.redis, RECONCILE_KEY)
        resent_batches = CounterMetricFamily(
            f"{PREFIX}_reconcile_batches",
            "Batches the beat sweep sent again, by why: lease_expired (a worker died or "
            "hung), lost_message (queued, never taken), deferred_due (its wait was over); "
            "unbatched: batches it made for queued files left without one.",
            labels=["why"],
        )
        resent_files = CounterMetricFamily(
            f"{PREFIX}_reconcile_files",
            "Files in the batches the beat sweep sent again, by why (as for batches).",
            labels=["why"],
        )
        for why in RECONCILE_WHYS:
            resent_batches.add_metric([why], float(reconcile.get(f"batches:{why}", 0)))
            resent_files.add_metric([why], float(reconcile.get(f"files:{why}", 0)))

        budget = read_budget(self.redis, now=self.clock())
        if budget.error is not None:  # Redis stopped answering mid-scrape: the part is down
            raise redis.ConnectionError(budget.error)
        check = read_server_check(self.redis)
        yield depth
        yield unacked
        yield responses
        yield throttled
        yield resent_batches
        yield resent_files
        # The one reading every view shares (reka_ingest.metrics.budget).
        yield GaugeMetricFamily(
            f"{PREFIX}_budget_known",
            f"1 when the shared API budget's rule is published in Redis (key {BUDGET_KEY}).",
            value=1.0 if budget.known else 0.0,
        )
        if budget.known:
            rows: tuple[tuple[str, float | None, str], ...] = (
                (
                    "unlimited",
                    1.0 if budget.limit is None else 0.0,
                    "1 when the shared API budget has no daily limit (INGEST_UPLOADS_PER_DAY=0).",
                ),
                ("used", budget.used, "Upload requests sent in the budget's window (24 h)."),
                ("remaining", budget.remaining, "Upload requests left in the shared API budget."),
                ("limit", budget.limit, "Upload requests the shared API budget allows per window."),
                (
                    "reset_timestamp_seconds",
                    budget.refills_at,
                    "When the shared API budget's next slot frees (epoch seconds).",
                ),
                (
                    "paused_until_timestamp_seconds",
                    budget.paused_until,
                    "Until when the API asked every worker to wait (epoch seconds).",
                ),
            )
            for name, known, text in rows:
                if known is not None:
                    yield GaugeMetricFamily(f"{PREFIX}_budget_{name}", text, value=float(known))
        if check is not None:
            yield from self._server_check(check)

    def _server_check(self, check: ServerCheck) -> Iterator[Metric]:
        """The last periodic server check (Redis key `reka_ingest:server_check`); left
        out until a check has run (INGEST_SERVER_CHECK_INTERVAL, 0 = off)."""
        yield GaugeMetricFamily(
            f"{PREFIX}_server_check_last_failed",
            "1 when the latest server check failed (its error is in `reka-ingest status`).",
            value=1.0 if check.failed_last() else 0.0,
        )
        if check.at is None:
            return
        yield GaugeMetricFamily(
            f"{PREFIX}_server_check_age_seconds",
            "Seconds since the last server check finished.",
            value=max(0.0, self.clock() - check.at),
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_server_check_duration_seconds",
            "Seconds the last server check took.",
            value=float(check.seconds or 0.0),
        )
        rows = (
            ("orphans", "orphans", "Images on the server no ledger row owns (last server check)."),
            (
                "missing",
                "missing",
                "Rows the ledger calls indexed or stored whose image the server no longer "
                "has: expired or deleted (last server check).",
            ),
            (
                "drift",
                "drift",
                "Rows whose indexing status on the server differs from the ledger's "
                "(last server check).",
            ),
            (
                "duplicates_unsettled",
                "duplicates_unsettled",
                "Files flagged possible_duplicate the last server check could not settle.",
            ),
            ("images", "images_on_server", "Images the server held at the last server check."),
        )
        for name, key, text in rows:
            yield GaugeMetricFamily(
                f"{PREFIX}_server_{name}", text, value=float(check.counts.get(key, 0))
            )


def build_registry(collector: IngestCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


@dataclass
class MetricsServer:
    """A running endpoint; `close()` stops it and releases the ledger and Redis."""

    server: WSGIServer
    thread: threading.Thread
    collector: IngestCollector

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
        self.collector.ledger.dispose()
        self.collector.redis.close()


def open_collector(
    settings: Settings, *, clock: Callable[[], float], create: bool = True
) -> IngestCollector:
    """A collector on the deployment's ledger and Redis; `create=False` (one page, read
    by a person) raises `LedgerMissing` where nothing has run (see `open_ledger`)."""
    ledger = open_ledger(settings.ingest.ledger_url, migrate=False, create=create)
    return IngestCollector(ledger, redis_client(settings.ingest.broker_url), clock=clock)


def serve(settings: Settings, *, host: str, port: int, clock: Callable[[], float]) -> MetricsServer:
    """Serve /metrics on host:port in a background thread (port 0: any free port); a
    port that cannot be bound is `PortUnavailable`, naming it."""
    collector = open_collector(settings, clock=clock)
    try:
        server, thread = start_http_server(port, addr=host, registry=build_registry(collector))
    except OSError as err:
        collector.ledger.dispose()
        collector.redis.close()
        raise port_taken(host, port, err, "--port") from None
    return MetricsServer(server, thread, collector)


# --- small readers --------------------------------------------------------------


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _hash(client: redis.Redis[bytes], key: str) -> dict[str, int]:
    return {_s(k): int(v) for k, v in client.hgetall(key).items()}


def _bucket_label(bound: float) -> str:
    return str(float(bound))

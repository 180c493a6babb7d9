"""The metrics collector against a real ledger and a real Redis: every value is
read at scrape time, counters add up across processes, a dead part is reported
and does not take the rest of the page with it."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator

import httpx
import pytest
import redis
from prometheus_client import generate_latest

from reka_ingest.core.bundled_redis import free_port
from reka_ingest.core.queues import CONTROL_QUEUE, UPLOAD_QUEUE
from reka_ingest.core.settings import Settings
from reka_ingest.ledger import Ledger
from reka_ingest.ledger.counts import LATENCY_BUCKETS
from reka_ingest.metrics.budget import publish_rule, window_key
from reka_ingest.metrics.collector import (
    KOMBU_PRIORITY_SEP,
    IngestCollector,
    build_registry,
    serve,
)
from reka_ingest.metrics.counters import (
    API_RESPONSES_KEY,
    CounterSink,
    endpoint_of,
    redis_client,
)
from reka_ingest.reka.client import RekaClient
from tests.metrics.support import add_batch, add_file, samples, value

NOW = 10_000.0


@pytest.fixture
def rclient(redis_url: str) -> Iterator[redis.Redis[bytes]]:
    client = redis_client(redis_url)
    yield client
    client.close()


def page(
    ledger: Ledger, client: redis.Redis[bytes]
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    collector = IngestCollector(ledger, client, clock=lambda: NOW)
    return samples(generate_latest(build_registry(collector)).decode())


def test_files_by_state_origin_reason_and_oldest_active(
    ledger: Ledger, rclient: redis.Redis[bytes]
) -> None:
    add_file(ledger, 1, state="queued", origin="event", seen_at=NOW - 30)
    add_file(ledger, 2, state="indexing", origin="scan", seen_at=NOW - 90)
    add_file(ledger, 3, state="indexed", origin="scan", seen_at=NOW - 500, indexed_at=NOW - 497)
    add_file(ledger, 4, state="failed", origin="backfill", reason="not_an_image")
    add_file(ledger, 5, state="failed", origin="recovery", reason="not_an_image")
    add_file(ledger, 6, state="failed", origin="event", reason="too_large")
    p = page(ledger, rclient)
    assert value(p, "reka_ingest_files", state="queued") == 1
    assert value(p, "reka_ingest_files", state="indexing") == 1
    assert value(p, "reka_ingest_files", state="failed") == 3
    assert value(p, "reka_ingest_files", state="duplicate") == 0  # every state, zeros too
    assert value(p, "reka_ingest_files_failed", reason="not_an_image") == 2
    assert value(p, "reka_ingest_files_failed", reason="too_large") == 1
    assert value(p, "reka_ingest_files_found_total", origin="event") == 2
    assert value(p, "reka_ingest_files_found_total", origin="scan") == 2
    assert value(p, "reka_ingest_files_found_total", origin="backfill") == 1
    assert value(p, "reka_ingest_files_found_total", origin="recovery") == 1
    # The oldest file not yet final is the indexing one, seen 90 s ago.
    assert value(p, "reka_ingest_oldest_active_file_age_seconds") == 90
    assert value(p, "reka_ingest_up", part="ledger") == 1
    assert value(p, "reka_ingest_up", part="redis") == 1


def test_no_active_file_means_age_zero(ledger: Ledger, rclient: redis.Redis[bytes]) -> None:
    add_file(ledger, 1, state="indexed", seen_at=1.0, indexed_at=2.0)
    assert value(page(ledger, rclient), "reka_ingest_oldest_active_file_age_seconds") == 0


def test_drop_to_indexed_histogram_is_cumulative_over_indexed_files(
    ledger: Ledger, rclient: redis.Redis[bytes]
) -> None:
    for n, seconds in enumerate([0.5, 3.0, 3.0, 45.0, 100_000.0]):
        add_file(ledger, n, state="indexed", seen_at=1000.0, indexed_at=1000.0 + seconds)
    add_file(ledger, 99, state="indexing", seen_at=1000.0)  # not indexed: not counted
    p = page(ledger, rclient)
    name = "reka_ingest_drop_to_indexed_seconds"
    assert value(p, f"{name}_bucket", le="1.0") == 1
    assert value(p, f"{name}_bucket", le="2.0") == 1
    assert value(p, f"{name}_bucket", le="5.0") == 3
    assert value(p, f"{name}_bucket", le="60.0") == 4
    assert value(p, f"{name}_bucket", le=f"{float(LATENCY_BUCKETS[-1])}") == 4
    assert value(p, f"{name}_bucket", le="+Inf") == 5
    assert value(p, f"{name}_count") == 5
    assert value(p, f"{name}_sum") == pytest.approx(100_051.5)


def test_queue_depth_counts_every_priority_list_and_unacked(
    ledger: Ledger, rclient: redis.Redis[bytes]
) -> None:
    rclient.rpush(UPLOAD_QUEUE, "a", "b", "c")
    rclient.rpush(f"{UPLOAD_QUEUE}{KOMBU_PRIORITY_SEP}6", "d")
    rclient.rpush(CONTROL_QUEUE, "e")
    rclient.hset("unacked", mapping={"tag1": "x", "tag2": "y"})
    p = page(ledger, rclient)
    assert value(p, "reka_ingest_queue_depth", queue=UPLOAD_QUEUE) == 4
    assert value(p, "reka_ingest_queue_depth", queue=CONTROL_QUEUE) == 1
    assert value(p, "reka_ingest_queue_unacked") == 2


def test_budget_is_read_from_its_key_when_published(
    ledger: Ledger, rclient: redis.Redis[bytes]
) -> None:
    p = page(ledger, rclient)
    assert value(p, "reka_ingest_budget_known") == 0
    assert not any(name == "reka_ingest_budget_remaining" for name, _ in p)
    # The rule the workers publish, and the requests they counted: read live.
    publish_rule(rclient, fp="fp-m", per_day=100, per_second=0)
    rclient.zadd(window_key("fp-m"), {f"r{n}": NOW - 1000 + n for n in range(63)})
    p = page(ledger, rclient)
    assert value(p, "reka_ingest_budget_known") == 1
    assert value(p, "reka_ingest_budget_unlimited") == 0
    assert value(p, "reka_ingest_budget_used") == 63
    assert value(p, "reka_ingest_budget_remaining") == 37
    assert value(p, "reka_ingest_budget_limit") == 100
    assert value(p, "reka_ingest_budget_reset_timestamp_seconds") == NOW - 1000 + 86400
    # No daily limit: still counted, nothing "left".
    publish_rule(rclient, fp="fp-m", per_day=0, per_second=0)
    p = page(ledger, rclient)
    assert value(p, "reka_ingest_budget_unlimited") == 1
    assert value(p, "reka_ingest_budget_used") == 63
    assert not any(name == "reka_ingest_budget_limit" for name, _ in p)
    assert not any(name == "reka_ingest_budget_remaining" for name, _ in p)


def _count_responses(url: str, n: int) -> None:
    sink = CounterSink.connect(url)
    for i in range(n):
        sink.on_response("POST", "/v1/images/upload", 429 if i % 4 == 0 else 200)
        sink.on_response("GET", f"/v1/images/img-{i}", 200)
    sink.close()


def test_counters_add_up_across_processes(
    ledger: Ledger, rclient: redis.Redis[bytes], redis_url: str
) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_count_responses, args=(redis_url, 40)) for _ in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    p = page(ledger, rclient)
    assert value(p, "reka_ingest_api_responses_total", endpoint="upload", status="429") == 40
    assert value(p, "reka_ingest_api_responses_total", endpoint="upload", status="200") == 120
    assert value(p, "reka_ingest_api_responses_total", endpoint="get", status="200") == 160
    assert value(p, "reka_ingest_api_rate_limited_total") == 40


def _answer(request: httpx.Request) -> httpx.Response:
    image = {"image_id": "img-1", "image_url": "u", "indexing_status": 2, "upload_timestamp": 1.0}
    return httpx.Response(200, json=image)


def test_a_client_without_an_observer_counts_nothing(rclient: redis.Redis[bytes]) -> None:
    transport = httpx.MockTransport(_answer)
    with RekaClient(base_url="http://reka.test", api_key="k", transport=transport) as client:
        client.get("img-1")
    assert rclient.exists(API_RESPONSES_KEY) == 0


def test_a_client_observed_by_a_sink_counts_each_response(
    ledger: Ledger, rclient: redis.Redis[bytes], redis_url: str
) -> None:
    sink = CounterSink.connect(redis_url)
    transport = httpx.MockTransport(_answer)
    with RekaClient(
        base_url="http://reka.test", api_key="k", transport=transport, on_response=sink.on_response
    ) as client:
        client.get("img-1")
        client.get("img-2")
    sink.close()
    p = page(ledger, rclient)
    assert value(p, "reka_ingest_api_responses_total", endpoint="get", status="200") == 2


def test_a_dead_redis_never_breaks_the_counted_work() -> None:
    sink = CounterSink(redis_client(f"redis://127.0.0.1:{free_port()}/0"))
    sink.api_response("upload", 200)  # logs and returns


def test_reconciled_batches_and_files_by_why(
    ledger: Ledger, rclient: redis.Redis[bytes], redis_url: str
) -> None:
    lease = add_batch(ledger, state="uploading")
    lost = add_batch(ledger, state="queued")
    due = add_batch(ledger, state="queued", last_error="429 rate limited")
    for n in range(3):
        add_file(ledger, n, state="uploading", batch_id=lease)
    add_file(ledger, 10, state="queued", batch_id=lost)
    for n in range(20, 22):
        add_file(ledger, n, state="queued", batch_id=due)
    sink = CounterSink.connect(redis_url)
    try:
        sink.resent(ledger, [lease, lost, due])
        sink.resent(ledger, [lease])
        sink.stranded(ledger, [lost, due])
    finally:
        sink.close()
    p = page(ledger, rclient)
    assert value(p, "reka_ingest_reconcile_batches_total", why="lease_expired") == 2
    assert value(p, "reka_ingest_reconcile_files_total", why="lease_expired") == 6
    assert value(p, "reka_ingest_reconcile_batches_total", why="lost_message") == 1
    assert value(p, "reka_ingest_reconcile_files_total", why="lost_message") == 1
    assert value(p, "reka_ingest_reconcile_batches_total", why="deferred_due") == 1
    assert value(p, "reka_ingest_reconcile_files_total", why="deferred_due") == 2
    assert value(p, "reka_ingest_reconcile_batches_total", why="unbatched") == 2
    assert value(p, "reka_ingest_reconcile_files_total", why="unbatched") == 3


def test_a_dead_redis_is_reported_and_the_ledger_still_answers(ledger: Ledger) -> None:
    add_file(ledger, 1, state="queued")
    dead = redis_client(f"redis://127.0.0.1:{free_port()}/0")
    p = page(ledger, dead)
    assert value(p, "reka_ingest_up", part="redis") == 0
    assert value(p, "reka_ingest_up", part="ledger") == 1
    assert value(p, "reka_ingest_files", state="queued") == 1
    assert not any(name.startswith("reka_ingest_queue_depth") for name, _ in p)


@pytest.mark.parametrize(
    ("method", "path", "endpoint"),
    [
        ("POST", "/v1/images/upload", "upload"),
        ("POST", "/images/upload", "upload"),
        ("POST", "/v1/images/search", "search"),
        ("GET", "/v1/images", "list"),
        ("GET", "/v1/images/abc%2Fdef", "get"),
        ("DELETE", "/v1/images/abc", "delete"),
        ("PUT", "/v1/images/abc", "other"),
    ],
)
def test_endpoint_labels_never_carry_an_image_id(method: str, path: str, endpoint: str) -> None:
    assert endpoint_of(method, path) == endpoint


def test_the_endpoint_serves_the_page_over_http(
    make_settings: object, redis_url: str, ledger: Ledger
) -> None:
    assert callable(make_settings)
    settings: Settings = make_settings(redis_url=redis_url, database_url=ledger.url)
    add_file(ledger, 1, state="indexing")
    server = serve(settings, host="127.0.0.1", port=0, clock=lambda: NOW)
    try:
        r = httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=10)
    finally:
        server.close()
    assert r.status_code == 200
    assert value(samples(r.text), "reka_ingest_files", state="indexing") == 1

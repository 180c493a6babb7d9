"""deploy/grafana/reka-ingest.json: every query names a metric that exists
(ours, as the collector exposes them; Flower's, as Flower defines them), and
what matters on our page is on the dashboard."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import flower.events
import redis
from prometheus_client import generate_latest

from reka_ingest.ledger import Ledger
from reka_ingest.metrics.budget import pause_key, publish_rule, window_key
from reka_ingest.metrics.collector import IngestCollector, build_registry
from reka_ingest.metrics.counters import API_RESPONSES_KEY, redis_client
from tests.metrics.support import add_file, samples

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "reka-ingest.json"
# On the page for scripts and alerts, not worth a panel.
NOT_ON_THE_DASHBOARD = {
    "reka_ingest_batches",
    "reka_ingest_budget_known",
    "reka_ingest_budget_reset_timestamp_seconds",
    "reka_ingest_budget_unlimited",
    "reka_ingest_budget_used",
    "reka_ingest_budget_paused_until_timestamp_seconds",
    "reka_ingest_drop_to_indexed_seconds_count",
    "reka_ingest_drop_to_indexed_seconds_sum",
}


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def our_metric_names(ledger: Ledger, redis_url: str) -> set[str]:
    client: redis.Redis[bytes] = redis_client(redis_url)
    # The rule the workers publish, one request counted, and a pause: every budget gauge.
    publish_rule(client, fp="fp-dash", per_day=2, per_second=0)
    client.zadd(window_key("fp-dash"), {"r1": -1.0})
    client.set(pause_key("fp-dash"), "60")
    client.hincrby(API_RESPONSES_KEY, "upload:200", 1)
    add_file(ledger, 1, state="failed", reason="not_an_image")
    try:
        text = generate_latest(build_registry(IngestCollector(ledger, client, clock=lambda: 0.0)))
    finally:
        client.close()
    return {name for name, _ in samples(text.decode())}


def test_every_query_names_a_real_metric(ledger: Ledger, redis_url: str) -> None:
    ours = our_metric_names(ledger, redis_url)
    flowers = set(re.findall(r"'(flower_\w+)'", Path(flower.events.__file__).read_text()))
    assert "flower_events_total" in flowers
    used = {
        name for e in exprs() for name in re.findall(r"(?<![$\w])((?:reka_ingest|flower)_\w+)", e)
    }
    for name in used:
        base = re.sub(r"_bucket$", "", name)
        if name.startswith("reka_ingest"):
            assert name in ours, name
        else:
            assert base in flowers, name
    assert any(n.startswith("flower_") for n in used)


def test_what_matters_on_our_page_is_on_the_dashboard(ledger: Ledger, redis_url: str) -> None:
    ours = {re.sub(r"_bucket$", "", n) for n in our_metric_names(ledger, redis_url)}
    text = " ".join(exprs())
    missing = {n for n in ours - NOT_ON_THE_DASHBOARD if n not in text}
    assert missing == set()


def test_panels_are_well_formed() -> None:
    d = dashboard()
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    assert {v["name"] for v in d["templating"]["list"]} == {"datasource", "job", "flower_job"}
    for p in d["panels"]:
        assert {"h", "w", "x", "y"} <= set(p["gridPos"])
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        for t in p.get("targets", []):
            assert t["datasource"]["uid"] == "${datasource}"
            assert t["expr"].count("(") == t["expr"].count(")")

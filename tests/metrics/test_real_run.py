"""The metrics page after a small real run: real worker processes counted
into Redis, the ledger read at scrape time by `reka-ingest metrics --once`."""

from __future__ import annotations

from pathlib import Path

from reka_ingest.core.queues import UPLOAD_QUEUE
from tests.metrics.real_run import BAD_FILES, FILES_PER_BATCH, TOTAL, small_run
from tests.metrics.support import samples, value


def test_metrics_page_after_a_small_real_run(tmp_path: Path, redis_url: str) -> None:
    with small_run(tmp_path, redis_url) as run:
        p = samples(run.metrics_page)
        good = TOTAL - BAD_FILES
        assert run.counts["indexed"] == good
        assert value(p, "reka_ingest_files", state="indexed") == good
        assert value(p, "reka_ingest_files", state="failed") == BAD_FILES
        assert value(p, "reka_ingest_files_failed", reason="not_an_image") == BAD_FILES
        assert value(p, "reka_ingest_files", state="queued") == 0
        assert value(p, "reka_ingest_files_found_total", origin="event") == FILES_PER_BATCH
        assert value(p, "reka_ingest_files_found_total", origin="scan") == FILES_PER_BATCH + 1
        assert value(p, "reka_ingest_oldest_active_file_age_seconds") == 0
        assert value(p, "reka_ingest_queue_depth", queue=UPLOAD_QUEUE) == 0
        # Every indexed file is in the latency histogram.
        assert value(p, "reka_ingest_drop_to_indexed_seconds_count") == good
        assert value(p, "reka_ingest_drop_to_indexed_seconds_sum") > 0
        # Counted by the worker's prefork children, read back from Redis.
        assert value(p, "reka_ingest_api_responses_total", endpoint="upload", status="200") == 2
        throttled = value(p, "reka_ingest_api_responses_total", endpoint="upload", status="429")
        assert throttled >= 1
        assert value(p, "reka_ingest_api_rate_limited_total") == throttled

        # The poll read every indexed file's status: a Get each, or List Images pages.
        def polled(endpoint: str) -> float:
            key = ("reka_ingest_api_responses_total", frozenset({("endpoint", endpoint)}))
            return p.get((key[0], key[1] | {("status", "200")}), 0.0)

        assert polled("get") >= good or polled("list") >= 1, (polled("get"), polled("list"))
        # The throttled batch waited in the ledger and the beat sweep sent it again.
        assert value(p, "reka_ingest_reconcile_batches_total", why="deferred_due") >= 1
        assert value(p, "reka_ingest_reconcile_files_total", why="deferred_due") >= FILES_PER_BATCH
        assert value(p, "reka_ingest_up", part="redis") == 1
        assert value(p, "reka_ingest_up", part="ledger") == 1

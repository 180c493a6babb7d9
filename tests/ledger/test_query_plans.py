"""Every query a sweep, a scrape or `status` runs is served by an index at 100,000 rows.

On PostgreSQL alone (SQLite's planner is not the one a large ledger runs on): a
ledger is filled with 100,000 files in realistic states (mostly indexed, some
failed, duplicates, a few thousand indexing with their poll times), ANALYZEd and
VACUUMed (so index-only scans count), and the real functions are run: a poll
sweep, the failure settling, a reconcile sweep and its counters, a claim and
record_uploaded with the copies of its files, `status` (summary and the
--watch snapshot) and a metrics scrape. Each SQL statement they send is
captured and EXPLAINed with its own parameters; a sequential scan of `files`
or of `batches`, or any read of `batches` by `status` or the scrape (batches by
state are read from `batch_counts`, migration 0009), fails the test, naming the
statement and its plan.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from sqlalchemy import event, text

from reka_ingest.cli.watch_status import take_snapshot
from reka_ingest.core.states import FileState
from reka_ingest.ledger import Ledger, open_ledger
from reka_ingest.ledger.polling import (
    PollOutcome,
    claim_due_polls,
    record_polls,
    record_settled,
    take_unsettled_failures,
)
from reka_ingest.ledger.queries import summary
from reka_ingest.ledger.reconcile import batch_stranded, batches_to_send
from reka_ingest.ledger.uploads import Uploaded, claim_batch, finish_batch, record_uploaded
from reka_ingest.metrics.collector import IngestCollector
from reka_ingest.metrics.counters import resent_by_why
from tests.support.postgres import PostgresCluster

FILES = 100_000
PER_BATCH = 50
NOW = 1_800_000_000.0
BATCH_UNDER_TEST = 1  # an uploading batch whose files have copies elsewhere

# One statement's fill, by id `i` (1..FILES): its state, reason and batch decided by
# i's remainder, so the mix is fixed: 2% failed, 3% indexing (half due now), 5%
# duplicates (of the file 7 ids before, or under 1000 of a file of batch 1), 1%
# queued in batches waiting to be sent, the rest indexed; batch 1 is uploading.
_FILL_FILES = """
INSERT INTO files (
    id, path, source_root, work_path, final_path, origin, size, mtime, sha256, sidecar,
    index_flag, content_type, state, reason, message, attempts, batch_id, duplicate_of,
    possible_duplicate, image_id, image_url, indexing_status, upload_timestamp,
    upload_request_id, poll_request_id, next_poll_at, poll_delay, polls,
    seen_at, queued_at, uploaded_at, indexed_at, finished_at, updated_at)
SELECT
    i,
    'photos/2026/' || (i % 12 + 1) || '/camera-' || (i % 7)
        || '/IMG_' || lpad(i::text, 7, '0') || '.jpg',
    '/srv/reka-ingest/inbox',
    '/srv/reka-ingest/var/work/claim-' || (i / 1000) || '/IMG_' || lpad(i::text, 7, '0') || '.jpg',
    CASE WHEN kind = 'queued' THEN NULL
         WHEN kind = 'failed' THEN '/srv/reka-ingest/var/failed/IMG_' || i || '.jpg.error.json'
         ELSE '/srv/reka-ingest/var/done/photos/IMG_' || lpad(i::text, 7, '0') || '.jpg' END,
    (ARRAY['event', 'scan', 'backfill', 'recovery'])[i % 4 + 1],
    100000 + (i * 7919) % 5000000,
    :now - 90000 + i * 0.5,
    CASE WHEN kind = 'duplicate' THEN md5(dup::text) || md5((dup + 1)::text)
         ELSE md5(i::text) || md5((i + 1)::text) END,
    CASE WHEN i % 10 = 0 THEN '{"camera": "x100", "tags": ["a", "b"]}'::json END,
    true,
    'image/jpeg',
    kind,
    CASE WHEN kind = 'failed' THEN
        (ARRAY['indexing_failed', 'not_an_image', 'indexing_timeout', 'empty_file'])[i % 4 + 1]
         WHEN kind = 'duplicate' THEN 'duplicate_content' END,
    CASE WHEN kind = 'failed' THEN 'the server said no: ' || md5(i::text) END,
    1,
    CASE WHEN kind = 'queued' THEN (:batches + 1) + (i % 20)
         WHEN i <= :per_batch THEN :batch1
         ELSE 2 + (i / :per_batch) % (:batches - 1) END,
    CASE WHEN kind = 'duplicate' THEN dup END,
    false,
    CASE WHEN kind <> 'queued' THEN md5('img' || i::text) END,
    CASE WHEN kind <> 'queued' THEN 'https://images.reka.test/' || md5('img' || i::text) END,
    CASE WHEN kind = 'indexed' THEN 2 WHEN kind = 'indexing' THEN 1 END,
    CASE WHEN kind <> 'queued' THEN :now - 80000 + i * 0.5 END,
    'req-' || md5(i::text),
    CASE WHEN kind IN ('indexed', 'indexing') THEN 'poll-' || md5(i::text) END,
    CASE WHEN kind = 'indexing' THEN :now - 30 + (i % 60) END,
    CASE WHEN kind = 'indexing' THEN 4.0 END,
    CASE WHEN kind IN ('indexed', 'indexing') THEN 3 ELSE 0 END,
    :now - 90000 + i * 0.5,
    :now - 89000 + i * 0.5,
    CASE WHEN kind <> 'queued' THEN :now - 80000 + i * 0.5 END,
    CASE WHEN kind = 'indexed' THEN :now - 79990 + i * 0.5 + (i % 300) END,
    CASE WHEN kind IN ('indexed', 'failed', 'duplicate') THEN :now - 79990 + i * 0.5 END,
    :now - 79990 + i * 0.5
FROM (
    SELECT i, CASE
        WHEN i <= :per_batch THEN 'uploading'
        WHEN i % 100 IN (0, 1) THEN 'failed'
        WHEN i % 100 IN (2, 3, 4) THEN 'indexing'
        WHEN i % 100 IN (5, 6, 7, 8, 9) THEN 'duplicate'
        WHEN i % 100 = 10 THEN 'queued'
        ELSE 'indexed' END AS kind,
        CASE WHEN i < 1000 THEN i % :per_batch + 1 ELSE i - 7 END AS dup
    FROM generate_series(1, :files) AS i
) AS g
"""

_FILL_BATCHES = """
INSERT INTO batches (
    id, state, file_count, total_bytes, attempts, created_at, queued_at, started_at,
    finished_at, lease_until, next_attempt_at, request_id, last_error)
SELECT
    b,
    CASE WHEN b = :batch1 THEN 'uploading'
         WHEN b > :batches THEN
            (ARRAY['queued', 'deferred', 'uploading', 'queued'])[b % 4 + 1]
         ELSE 'done' END,
    :per_batch,
    :per_batch * 2500000::bigint,
    1,
    :now - 90000 + b * 25,
    :now - 90000 + b * 25,
    :now - 89990 + b * 25,
    CASE WHEN b <= :batches THEN :now - 89980 + b * 25 END,
    CASE WHEN b = :batch1 THEN :now - 5 END,
    CASE WHEN b > :batches AND b % 4 = 1 THEN :now - 10 END,
    'req-' || md5(b::text),
    NULL
FROM generate_series(1, (:batches + 20)) AS b
"""


_FILL_PARAMS = {
    "now": NOW,
    "files": FILES,
    "per_batch": PER_BATCH,
    "batches": FILES // PER_BATCH,
    "batch1": BATCH_UNDER_TEST,
}


@dataclass(frozen=True, slots=True)
class Statement:
    sql: str
    params: Any
    step: str


@pytest.fixture(scope="module")
def big_ledger(postgres: PostgresCluster) -> Iterator[Ledger]:
    url = postgres.fresh_database()
    ledger = open_ledger(url)
    with ledger.engine.begin() as conn:
        conn.execute(text(_FILL_BATCHES), _FILL_PARAMS)
        conn.execute(text(_FILL_FILES), _FILL_PARAMS)
        conn.execute(text("SELECT setval('files_id_seq', (SELECT max(id) FROM files))"))
        conn.execute(text("SELECT setval('batches_id_seq', (SELECT max(id) FROM batches))"))
    with ledger.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE files"))
        conn.execute(text("VACUUM ANALYZE batches"))
    yield ledger
    ledger.dispose()
    postgres.drop(url)


class Recorder:
    """Every statement sent on the ledger's engine while a step runs."""

    def __init__(self, ledger: Ledger) -> None:
        self.statements: list[Statement] = []
        self.step = ""
        event.listen(ledger.engine, "before_cursor_execute", self._on_execute)

    def _on_execute(
        self, _conn: Any, _cursor: Any, statement: str, params: Any, _ctx: Any, many: bool
    ) -> None:
        first = params[0] if many and params else params
        self.statements.append(Statement(statement, first, self.step))

    def run(self, step: str, fn: Callable[[], object]) -> None:
        self.step = step
        fn()


def _plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from _plan_nodes(child)


def _outline(nodes: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"  {n['Node Type']} {n.get('Relation Name', '')} {n.get('Index Name', '')}" for n in nodes
    )


def _explain(ledger: Ledger, st: Statement) -> list[dict[str, Any]]:
    raw = ledger.engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute(f"EXPLAIN (FORMAT JSON) {st.sql}", st.params)
        row = cur.fetchone()
        assert row is not None
        doc = row[0]
        raw.rollback()
    finally:
        raw.close()
    plan = doc if isinstance(doc, list) else json.loads(doc)
    return list(_plan_nodes(plan[0]["Plan"]))


# Batches by state come from `batch_counts` (migration 0009): a read of `batches` in
# these, even through an index, would read one entry per batch ever made.
_NO_BATCHES_READ = {"status", "status --watch", "metrics scrape"}


def _run_everything(ledger: Ledger, rec: Recorder) -> None:
    def poll_sweep() -> None:
        due = claim_due_polls(ledger, now=NOW, limit=200, lease=60.0)
        assert due, "the fill has indexing files whose poll time has come"
        outcomes = [
            PollOutcome(
                file_id=d.file_id,
                state=FileState.INDEXED if n % 2 else FileState.INDEXING,
                indexing_status=2 if n % 2 else 1,
                image_url="https://images.reka.test/x",
                request_id="poll-req",
                next_poll_at=None if n % 2 else NOW + 8,
                poll_delay=None if n % 2 else 8.0,
            )
            for n, d in enumerate(due)
        ]
        record_polls(ledger, outcomes, now=NOW)

    def settle() -> None:
        taken = take_unsettled_failures(
            ledger, settled_suffix=".error.json", now=NOW, lease=60.0, limit=100
        )
        record_settled(
            ledger,
            [(f.file_id, f"{f.work_path}.error.json") for f in taken[:1]],
            [f.file_id for f in taken[1:]],
            now=NOW,
        )

    def reconcile() -> None:
        ids = batches_to_send(ledger, now=NOW, requeue_after=300.0, limit=1000)
        assert ids, "the fill has batches to send again"
        resent_by_why(ledger, ids)
        batch_stranded(
            ledger, now=NOW, older_than=600.0, max_files=100, max_bytes=10**8, limit=1000
        )

    def upload() -> None:
        claimed = claim_batch(ledger, BATCH_UNDER_TEST, now=NOW, lease=600.0)
        assert claimed is not None and claimed.files
        results = [
            Uploaded(
                file_id=f.id,
                image_id=f"img-{f.id}",
                image_url=f"https://images.reka.test/{f.id}",
                indexing_status=1,
                upload_timestamp=NOW,
                state=FileState.INDEXING,
                next_poll_at=NOW + 4,
                poll_delay=4.0,
            )
            for f in claimed.files
        ]
        record_uploaded(ledger, results, request_id="r" * 300, now=NOW)
        finish_batch(ledger, BATCH_UNDER_TEST, now=NOW, request_id="r" * 300)

    def scrape() -> None:
        client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
        collector = IngestCollector(ledger, client, clock=lambda: NOW)
        names = {m.name for m in collector.collect()}
        assert "reka_ingest_drop_to_indexed_seconds" in names
        client.close()

    rec.run("poll sweep", poll_sweep)
    rec.run("settle failures", settle)
    rec.run("reconcile sweep", reconcile)
    rec.run("upload", upload)
    rec.run("status", lambda: summary(ledger, now=NOW))
    rec.run("status --watch", lambda: take_snapshot(ledger, None, now=NOW))
    rec.run("metrics scrape", scrape)


def test_no_sweep_scrape_or_status_query_scans_a_table(big_ledger: Ledger) -> None:
    rec = Recorder(big_ledger)
    try:
        _run_everything(big_ledger, rec)
    finally:
        event.remove(big_ledger.engine, "before_cursor_execute", rec._on_execute)
    checked = 0
    bad: list[str] = []
    for st in rec.statements:
        verb = st.sql.lstrip().split(None, 1)[0].upper()
        if verb not in {"SELECT", "UPDATE", "DELETE", "INSERT", "WITH"}:
            continue
        nodes = _explain(big_ledger, st)
        checked += 1
        for node in nodes:
            table = node.get("Relation Name")
            if st.step in _NO_BATCHES_READ and table == "batches":
                bad.append(f"[{st.step}] reads batches:\n{st.sql}\n{_outline(nodes)}")
            if node["Node Type"] != "Seq Scan":
                continue
            if table in {"files", "batches"}:
                bad.append(f"[{st.step}] Seq Scan on {table}:\n{st.sql}\n{_outline(nodes)}")
    assert checked >= 20, f"only {checked} statements seen"
    assert not bad, "\n\n".join(bad)

"""A small real run for the metrics and logging tests: the stand-in server, a
Celery worker (prefork, two processes) and beat as real processes against the
bundled Redis; batches recorded in the ledger the way the watcher records them
and sent with `send_upload`. The first upload meets a 429 from the stand-in,
so the run has a throttled request, a deferred batch and a sweep re-send."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

from reka_ingest.cli.processes import cli_argv
from reka_ingest.core.queues import send_upload
from reka_ingest.core.states import Origin
from reka_ingest.ledger import open_ledger
from reka_ingest.ledger.intake import NewFile, create_batch, record_files
from reka_ingest.metrics.counters import API_RESPONSES_KEY
from scheduler.enqueue import producer_app
from tests.support.images import image_bytes
from tests.support.service import API_KEY, Service, wait_for

FILES_PER_BATCH = 3
BATCHES = 2
BAD_FILES = 1  # not an image: fails with a reason, in its own batch
TOTAL = FILES_PER_BATCH * BATCHES + BAD_FILES


@dataclass
class RunResult:
    service: Service
    batch_ids: list[int]
    counts: dict[str, int]
    metrics_page: str


def _stage(service: Service, names_and_bytes: list[tuple[str, bytes]], origin: Origin) -> int:
    settings = service.settings().ingest
    new = []
    for name, data in names_and_bytes:
        claim = settings.work_dir / f"claim-{name}"
        claim.mkdir(parents=True, exist_ok=True)
        path = claim / name
        path.write_bytes(data)
        new.append(
            NewFile(
                path=name,
                source_root=str(settings.inbox),
                work_path=str(path),
                origin=origin,
                size=len(data),
                mtime=0.0,
                sha256=hashlib.sha256(data).hexdigest(),
                seen_at=path.stat().st_mtime,
                sidecar=None,
            )
        )
    recorded = record_files(service.ledger, new, now=new[0].seen_at)
    return create_batch(service.ledger, [r.file_id for r in recorded], now=new[0].seen_at)


@contextmanager
def small_run(root: Path, redis_url: str, *, log_level: str = "INFO") -> Iterator[RunResult]:
    svc = Service(
        root,
        redis_url,
        env={"INGEST_LOG_LEVEL": log_level},
        standin_env={
            "STANDIN_INDEX_DELAY": "0.3",
            # Every request starts a 429 until the test turns it off below.
            "STANDIN_BURST_429_SHARE": "1.0",
            "STANDIN_BURST_429_RETRY_AFTER": "0",
        },
    )
    try:
        svc.inbox.mkdir(parents=True, exist_ok=True)
        svc.data_dir.mkdir(parents=True, exist_ok=True)
        open_ledger(svc.settings().ingest.ledger_url).dispose()
        svc.start_standin(wait=False)
        svc.start_worker()
        svc.start_beat()
        svc.wait_standin()  # all three start at once; nothing is sent before this
        app = producer_app(svc.settings())
        counters = redis.Redis.from_url(redis_url)
        try:
            first = _stage(
                svc, [(f"event{i}.jpg", image_bytes(100 + i)) for i in range(3)], Origin.EVENT
            )
            send_upload(app, first)
            wait_for(
                lambda: counters.hget(API_RESPONSES_KEY, "upload:429") is not None,
                30,
                "a 429 from the stand-in",
                on_timeout=svc.diagnose,
            )
            svc.standin_post("/_standin/faults", {"burst_429_share": 0.0})
            scanned = [(f"scan{i}.jpg", image_bytes(200 + i)) for i in range(3)]
            second = _stage(svc, scanned, Origin.SCAN)
            bad = _stage(svc, [("notes.jpg", b"this is not a picture")], Origin.SCAN)
            for batch_id in (second, bad):
                send_upload(app, batch_id)
            counts = svc.wait_terminal(TOTAL, 60)
        finally:
            counters.close()
            app.close()
        page = subprocess.run(
            cli_argv("metrics", "--once"),
            env=svc.env,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout.decode()
        yield RunResult(svc, [first, second, bad], counts, page)
    finally:
        svc.stop()


def key_everywhere(result: RunResult) -> list[str]:
    """Every place the API key shows in a log file of the run (should be none)."""
    hits = []
    for log in sorted((result.service.data_dir / "logs").glob("*.log")):
        for n, line in enumerate(log.read_text(errors="replace").splitlines(), 1):
            if API_KEY in line:
                hits.append(f"{log.name}:{n}: {line[:200]}")
    return hits

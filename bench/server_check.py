"""The server check at scale: `reka-ingest check` on a ledger of N rows against a
stand-in holding N images (BENCH_CHECK_N, default 100,000; 0 skips).

Filling both sides fast, and only through public doors:
- the stand-in: N distinct tiny JPEGs (one 8x8 image, each copy made unique by
  a JPEG comment segment, a few hundred bytes) uploaded through
  `POST /v1/images/upload`, 100 to a request, a few requests at once; the
  answers give each image's id, URL and upload time. No reach into the
  stand-in's memory or folder format, so the same code would fill any server;
- the ledger: SQLite in the run folder (the default ledger), migrated by
  `open_ledger`, then one row per image (`indexed`, its image id, the sha256
  of its bytes) written with bulk INSERTs of 5,000 rows per statement.

Then the check runs as the command a user types, `reka-ingest check --json`,
in its own process on the service's default settings (its pace included), and
the bench samples that process: wall seconds, peak RSS (VmHWM), CPU, the
requests it reports and the requests the stand-in counted while it ran. The
same again at N/10 shows how memory grows with the ledger (by design: a set of
ids, nothing more).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

import httpx
from sqlalchemy import insert

from bench.procs import Sampler
from bench.service import API_KEY, StandIn
from bench.standin_throughput import noisy_jpeg
from reka_ingest.core.constants import API_KEY_HEADER
from reka_ingest.core.states import FileState, Origin
from reka_ingest.ledger import open_ledger
from reka_ingest.ledger.schema import File
from reka_ingest.metrics.server_check import COUNTS

PER_REQUEST: Final = 100
FILL_CONCURRENCY: Final = 4
INSERT_ROWS: Final = 5000


def tiny_jpeg(i: int, base: bytes) -> bytes:
    """The `i`-th distinct tiny JPEG: `base` with a comment segment after its SOI."""
    comment = f"reka-ingest bench check {i:08d}".encode()
    return base[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + base[2:]


def fill_standin(standin: StandIn, n: int) -> list[dict[str, Any]]:
    """Upload `n` distinct tiny images; one record per image: id, URL, time, sha256."""
    base = noisy_jpeg(1, 8, 8)
    metadata = json.dumps(
        {"requests": [{"indexing_config": {"index": True}, "metadata": {}}] * PER_REQUEST}
    )

    def one_request(client: httpx.Client, start: int) -> list[dict[str, Any]]:
        blobs = [tiny_jpeg(i, base) for i in range(start, min(n, start + PER_REQUEST))]
        meta = metadata if len(blobs) == PER_REQUEST else _metadata(len(blobs))
        r = client.post(
            "/v1/images/upload",
            headers={API_KEY_HEADER: API_KEY},
            data={"metadata": meta},
            files=[("images", (f"c{start + k}.jpg", b, "image/jpeg")) for k, b in enumerate(blobs)],
        )
        r.raise_for_status()
        results: list[dict[str, Any]] = r.json()["results"]
        for image, blob in zip(results, blobs, strict=True):
            image["sha256"] = hashlib.sha256(blob).hexdigest()
            image["size"] = len(blob)
        return results

    limits = httpx.Limits(max_connections=FILL_CONCURRENCY)
    with (
        httpx.Client(base_url=standin.base_url, timeout=60, limits=limits) as client,
        ThreadPoolExecutor(FILL_CONCURRENCY) as pool,
    ):
        pages = list(pool.map(functools.partial(one_request, client), range(0, n, PER_REQUEST)))
    return [image for page in pages for image in page]


def _metadata(count: int) -> str:
    return json.dumps({"requests": [{"indexing_config": {"index": True}, "metadata": {}}] * count})


def fill_ledger(url: str, images: list[dict[str, Any]]) -> None:
    """One `indexed` row per image, by bulk INSERTs."""
    ledger = open_ledger(url)  # creates and migrates it
    now = time.time()
    try:
        for start in range(0, len(images), INSERT_ROWS):
            rows = [
                {
                    "path": f"check/{i // 1000:03d}/c{i:07d}.jpg",
                    "source_root": "/bench/inbox",
                    "work_path": f"/bench/work/c{i:07d}.jpg",
                    "final_path": f"/bench/done/c{i:07d}.jpg",
                    "origin": Origin.SCAN.value,
                    "size": image["size"],
                    "mtime": now,
                    "sha256": image["sha256"],
                    "index_flag": True,
                    "content_type": "image/jpeg",
                    "state": FileState.INDEXED.value,
                    "image_id": image["image_id"],
                    "image_url": image["image_url"],
                    "indexing_status": image["indexing_status"],
                    "upload_timestamp": image["upload_timestamp"],
                    "seen_at": now,
                    "queued_at": now,
                    "uploaded_at": now,
                    "indexed_at": now,
                    "finished_at": now,
                    "updated_at": now,
                }
                for i, image in enumerate(images[start : start + INSERT_ROWS], start=start)
            ]
            with ledger.write() as s:
                s.execute(insert(File), rows)
    finally:
        ledger.dispose()


def _requests(standin: StandIn) -> dict[str, int]:
    """Requests the stand-in counted on its API, per endpoint (every status); not its
    admin calls (the bench's own, such as this one)."""
    counted = standin.stats()["requests"].items()
    return {k: sum(v.values()) for k, v in counted if not k.startswith("admin")}


def run_check(standin: StandIn, n: int, *, root: Path, timeout: float) -> dict[str, Any]:
    """Fill both sides with `n`, then time and sample `reka-ingest check --json`."""
    shutil.rmtree(root, ignore_errors=True)
    (root / "var").mkdir(parents=True)
    standin.reset()
    t0 = time.monotonic()
    images = fill_standin(standin, n)
    filled_standin = time.monotonic() - t0
    url = f"sqlite:///{(root / 'var' / 'ledger.db').resolve()}"
    t1 = time.monotonic()
    fill_ledger(url, images)
    filled_ledger = time.monotonic() - t1
    del images

    env = {
        **os.environ,
        "INGEST_DATA_DIR": str(root / "var"),
        "INGEST_INBOX": str(root / "inbox"),
        "INGEST_DATABASE_URL": url,
        "INGEST_LOG_FORMAT": "json",
        "INGEST_LOG_LEVEL": "WARNING",
        "REKA_API_KEY": API_KEY,
        "REKA_API_BASE_URL": standin.base_url,
    }
    before = _requests(standin)
    out_path, err_path = root / "check.json", root / "check.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "reka_ingest.cli", "check", "--json"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=env,
        )
        sampler = Sampler({"check": proc.pid, "stand-in": standin.pid}).start()
        sampler.mark()
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise TimeoutError(f"check at N={n} did not finish in {timeout:.0f} s") from None
        finally:
            sampler.stop()
        seconds = time.monotonic() - started
    if code not in (0, 1):
        raise RuntimeError(f"check failed (exit {code}): {err_path.read_text()[-2000:]}")
    report = json.loads(out_path.read_text())
    after = _requests(standin)
    counted = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    peaks, cpu = sampler.peak_rss_mb(), sampler.cpu_window()
    if not os.environ.get("BENCH_KEEP"):
        shutil.rmtree(root, ignore_errors=True)
    return {
        "rows": n,
        "images": n,
        "fill_standin_s": round(filled_standin, 2),
        "fill_ledger_s": round(filled_ledger, 2),
        "seconds": round(seconds, 2),
        "check_seconds_reported": report.get("seconds"),
        "peak_rss_mb": peaks.get("check"),
        "cpu_s": cpu.get("check"),
        "standin_cpu_s": cpu.get("stand-in"),
        "requests_reported": report.get("requests"),
        "requests_counted": {k: v for k, v in counted.items() if v},
        "exit_code": code,
        "found": {
            k: report.get(k)
            for k in COUNTS
            if k != "requests"  # requests: counted apart
        },
    }


def run_checks(standin: StandIn, n: int, *, root: Path, timeout: float) -> dict[str, Any]:
    """The check at N, and at N/10 for the memory's growth (when N/10 >= 1000)."""
    sizes = [n // 10, n] if n // 10 >= 1000 else [n]
    runs = {}
    for size in sizes:
        print(f"server check: a ledger of {size} rows against a stand-in of {size} images")
        runs[str(size)] = run_check(standin, size, root=root / f"check-{size}", timeout=timeout)
    return {"n": n, "runs": runs}

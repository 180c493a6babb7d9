"""When the API is the slow part: the raw client and the pipeline against a stand-in
that holds every upload request `latency` seconds (`--upload-latency`; gets and
lists stay fast, so the indexing poll is not slowed), at the same concurrency and
batch size. `latency_ratio` = the pipeline's images/s / the raw client's, each to
its last upload (the raw client from its start, the pipeline from the first drop).

Throughput there is set by how many requests are in flight, so the report says
how long each side had fewer in flight than its concurrency: from the stand-in's
own record of each upload request's arrival and answer (`GET /_standin/upload-spans`),
between the first arrival and the last answer. The pipeline's batches (ledger
times) say where such time went: the lag to its first request, the wait of a queued
batch for a process, batches short of full.

The pipeline runs with INGEST_SIDECAR_WAIT=0 (BENCH_LATENCY_SIDECAR_WAIT): these
files have no sidecars, and the default wait for one (5 s after a file arrives) is
a fixed delay before the first claim that no concurrency removes (at 5,000 files
it alone would cost a quarter of the ratio). BENCH_LATENCY_INDEX_DELAY (1 s) makes
the indexing poll do real work meanwhile.

Alone (the rest of `make bench` skipped):

    python -m bench.latency        # BENCH_LATENCY_N, BENCH_LATENCY_S, BENCH_LATENCY_RUNS

prints the section and writes bench/.cache/latency-TIME.json per run.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Final

import httpx

from bench.scenarios import drop, percentiles, run_limit
from bench.service import API_KEY, Service, StandIn
from bench.workload import CACHE, jpegs
from reka_ingest.core.constants import API_KEY_HEADER
from reka_ingest.core.settings import IngestSettings

DEFAULT_N: Final = 5000
DEFAULT_LATENCY_S: Final = 0.5
TARGET: Final = 0.95
POLL_SECONDS: Final = 0.1


def in_flight(spans: list[tuple[float, float]], concurrency: int) -> dict[str, Any]:
    """Requests in flight over time, from (arrived, answered) spans: the window from
    the first arrival to the last answer, the seconds in it with fewer than
    `concurrency` in flight (and with none), and the mean in flight."""
    if not spans:
        return {"requests": 0}
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    start, end = events[0][0], events[-1][0]
    below = idle = busy = 0.0
    level, last, peak = 0, start, 0
    for t, step in events:
        width = t - last
        busy += width * level
        if level < concurrency:
            below += width
        if level == 0:
            idle += width
        level, last = level + step, t
        peak = max(peak, level)
    window = end - start
    durations = [b - a for a, b in spans]
    return {
        "requests": len(spans),
        "window_s": round(window, 3),
        "below_concurrency_s": round(below, 3),
        "below_concurrency_share": round(below / window, 4) if window > 0 else None,
        "none_in_flight_s": round(idle, 3),
        "mean_in_flight": round(busy / window, 3) if window > 0 else None,
        "max_in_flight": peak,
        "request_s": percentiles(durations),
        "first_arrival": start,
        "last_answer": end,
    }


def _raw(
    standin: StandIn, files: list[Path], *, batch: int, concurrency: int, work: Path, timeout: float
) -> dict[str, Any]:
    limit = run_limit(
        standin, files, batch=batch, concurrency=concurrency, work=work, timeout=timeout
    )
    spans = standin.upload_spans()
    flight = in_flight(spans, concurrency)
    return {
        "t0": min((a for a, _ in spans), default=0.0),  # its first request
        "spans": spans,
        "images": limit["images"],
        "seconds": limit["seconds"],
        "images_per_s": limit["images_per_s"],
        "upload_requests": limit["upload_requests"],
        "cpu_s": limit["cpu_s"],
        "in_flight": flight,
    }


def _pipeline(
    standin: StandIn,
    files: list[Path],
    *,
    batch: int,
    concurrency: int,
    root: Path,
    timeout: float,
) -> dict[str, Any]:
    """N files dropped at once into the real service; until every one is uploaded."""
    standin.reset()
    # Images take a while to index, as Reka's do: the indexing poll has work to do
    # while the uploads run, as it has in production.
    response = httpx.post(
        f"{standin.base_url}/_standin/faults",
        json={"index_delay": float(os.environ.get("BENCH_LATENCY_INDEX_DELAY", "1.0"))},
        headers={API_KEY_HEADER: API_KEY},
    )
    response.raise_for_status()
    env = {
        "INGEST_WORKER_CONCURRENCY": str(concurrency),
        "INGEST_BATCH_MAX_FILES": str(batch),
        "INGEST_SIDECAR_WAIT": os.environ.get("BENCH_LATENCY_SIDECAR_WAIT", "0"),
    }
    service = Service(root, standin.base_url, env).start()
    try:
        drops = [drop(p, service.inbox) for p in files]
        t0 = min(drops)
        deadline = time.monotonic() + timeout
        uploaded = "SELECT count(*) FROM files WHERE uploaded_at IS NOT NULL"
        while int(service.query(uploaded)[0][0]) < len(files):
            if time.monotonic() > deadline:
                counts = service.query("SELECT state, count(*) FROM files GROUP BY state")
                raise TimeoutError(
                    f"latency pipeline: timed out after {timeout:.0f} s; ledger {dict(counts)}\n"
                    + service.log_tail()
                )
            time.sleep(POLL_SECONDS)
        last = float(service.query("SELECT max(uploaded_at) FROM files")[0][0])
        batches = service.query(
            "SELECT file_count, created_at, queued_at, started_at, finished_at FROM batches"
            " WHERE started_at IS NOT NULL ORDER BY started_at"
        )
        spans = standin.upload_spans()
        # What else the pipeline asked of the API meanwhile (the indexing poll's gets and lists).
        requests = {
            name: sum(counts.values()) for name, counts in standin.stats()["requests"].items()
        }
    finally:
        service.stop()
        service.remove()
    seconds = last - t0
    flight = in_flight(spans, concurrency)
    return {
        "t0": t0,
        "spans": spans,
        "batch_times": [list(b) for b in batches],
        "images": len(files),
        "seconds": round(seconds, 3),
        "images_per_s": round(len(files) / seconds, 1),
        "upload_requests": len(spans),
        "api_requests": requests,
        "in_flight": flight,
        "drop_seconds": round(max(drops) - t0, 3),
        "first_request_after_drop_s": round(flight["first_arrival"] - t0, 3) if spans else None,
        "last_answer_to_last_uploaded_s": round(last - flight["last_answer"], 3) if spans else None,
        "batches": {
            "count": len(batches),
            "files": percentiles([float(b[0]) for b in batches]),
            "short_of_full": sum(1 for b in batches if b[0] < batch),
            "created_to_queued_s": percentiles([b[2] - b[1] for b in batches if b[2]]),
            "queued_to_started_s": percentiles([b[3] - b[2] for b in batches if b[2]]),
            "started_to_finished_s": percentiles([b[4] - b[3] for b in batches if b[4]]),
        },
    }


def run_latency(
    files: list[Path],
    *,
    latency: float,
    batch: int,
    concurrency: int,
    root: Path,
    timeout: float,
    keep_spans: bool = False,
) -> dict[str, Any]:
    """The raw client, then the pipeline, on one stand-in started with `latency` per upload.
    `keep_spans`: the result keeps each side's request spans and the pipeline's batch
    times (seconds since each side's start), to look into."""
    standin = StandIn(root / "standin-logs", upload_latency=latency)
    standin.start()
    try:
        raw = _raw(standin, files, batch=batch, concurrency=concurrency, work=root, timeout=timeout)
        pipe = _pipeline(
            standin,
            files,
            batch=batch,
            concurrency=concurrency,
            root=root / "pipeline",
            timeout=timeout,
        )
    finally:
        standin.stop()
    for side in (raw, pipe):
        t0 = side.pop("t0")
        spans = side.pop("spans")
        times = side.pop("batch_times", [])
        if keep_spans:
            side["spans"] = [[round(a - t0, 3), round(b - t0, 3)] for a, b in spans]
            side["batch_times"] = [
                [b[0], *(None if x is None else round(x - t0, 3) for x in b[1:])] for b in times
            ]
    return {
        "n": len(files),
        "upload_latency_s": latency,
        "batch": batch,
        "concurrency": concurrency,
        "raw": raw,
        "pipeline": pipe,
        "value": round(pipe["images_per_s"] / raw["images_per_s"], 3),
    }


def lines(result: dict[str, Any] | None) -> list[str]:
    """The report's section."""
    if not result:
        return []
    out = [
        "",
        f"latency: every upload request held {result['upload_latency_s']:g} s by the stand-in, "
        f"N={result['n']}, batch {result['batch']}, concurrency {result['concurrency']} "
        "(both sides); to the last upload",
        f"  {'':<26}{'seconds':>9}{'images/s':>10}{'requests':>10}{'mean in flight':>16}"
        f"{'s below conc.':>15}{'s none':>8}",
    ]
    for name, row in (
        ("raw httpx client", result["raw"]),
        ("pipeline (drop->uploaded)", result["pipeline"]),
    ):
        f = row["in_flight"]
        out.append(
            f"  {name:<26}{row['seconds']:>9.2f}{row['images_per_s']:>10.1f}"
            f"{row['upload_requests']:>10}"
            f"{f.get('mean_in_flight') or 0:>16.2f}{f.get('below_concurrency_s', 0):>15.2f}"
            f"{f.get('none_in_flight_s', 0):>8.2f}"
        )
    pipe = result["pipeline"]
    b = pipe["batches"]
    out += [
        f"  pipeline: first request {pipe['first_request_after_drop_s']} s after the first drop "
        f"(drops took {pipe['drop_seconds']} s); {b['count']} batches, {b['short_of_full']} short "
        f"of {result['batch']}; queued->started p50 {b['queued_to_started_s']['p50']} s, "
        f"p95 {b['queued_to_started_s']['p95']} s",
        "  pipeline: API requests to the last upload: "
        + ", ".join(f"{k} {v}" for k, v in sorted(pipe.get("api_requests", {}).items())),
        f"  latency_ratio (pipeline images/s / raw images/s): {result['value']:.3f}",
    ]
    return out


def target(result: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    if not result:
        return {}
    value = result["value"]
    return {"latency_ratio": {"value": value, "target": f">= {TARGET}", "ok": value >= TARGET}}


def settings_from_env() -> tuple[int, float]:
    """(N, seconds per upload request) from BENCH_LATENCY_N and BENCH_LATENCY_S."""
    n = int(os.environ.get("BENCH_LATENCY_N", DEFAULT_N))
    latency = float(os.environ.get("BENCH_LATENCY_S", DEFAULT_LATENCY_S))
    return n, latency


def main() -> int:
    n, latency = settings_from_env()
    runs = int(os.environ.get("BENCH_LATENCY_RUNS", "1"))
    timeout = float(os.environ.get("BENCH_TIMEOUT", "600"))
    defaults = IngestSettings()
    files = jpegs(n)
    # Not under runs/: a `make bench` beside it removes that folder when it ends.
    root = CACHE / f"latency-{os.getpid()}"
    try:
        for i in range(runs):
            result = run_latency(
                files,
                latency=latency,
                batch=defaults.batch_max_files,
                concurrency=defaults.worker_concurrency,
                root=root,
                timeout=timeout,
                keep_spans=True,
            )
            out = CACHE / f"latency-{time.strftime('%Y%m%d-%H%M%S')}-{i}.json"
            out.write_text(json.dumps(result, indent=2) + "\n")
            print("\n".join(lines(result)))
            for name, t in target(result).items():
                print(f"  {'PASS' if t['ok'] else 'FAIL'}  {name}: {t['value']} ({t['target']})")
            print(f"  wrote {out}")
    finally:
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

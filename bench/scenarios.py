"""The scenarios: the limit, the pipeline (with a trickle after it), the worker's
memory at two sizes, the watcher alone under a burst. Each returns plain
dicts for the report; each is bounded by a timeout and stops what it started.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Final

from bench.procs import MB, Profiler, Sampler
from bench.service import API_KEY, TERMINAL, Service, StandIn
from bench.workload import small_jpegs

POLL_SECONDS: Final = 0.1


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50/p95/p99 by nearest rank (None when there is nothing to rank)."""
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    ordered = sorted(values)
    out: dict[str, float | None] = {}
    for p in (50, 95, 99):
        rank = max(1, -(-p * len(ordered) // 100))  # ceil(p/100 * n)
        out[f"p{p}"] = round(ordered[rank - 1], 3)
    return out


def drop(src: Path, inbox: Path) -> float:
    """Put one file into the inbox whole: hardlink as NAME.part, then rename to NAME."""
    part = inbox / f"{src.name}.part"
    os.link(src, part)
    os.rename(part, inbox / src.name)
    return time.time()


def wait_count(service: Service, expected: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while service.count(TERMINAL) < expected:
        if time.monotonic() > deadline:
            counts = service.query("SELECT state, count(*) FROM files GROUP BY state")
            raise TimeoutError(
                f"{what}: timed out after {timeout:.0f} s; ledger {dict(counts)}\n"
                + service.log_tail()
            )
        time.sleep(POLL_SECONDS)


# --- the limit ---------------------------------------------------------------------


def run_limit(
    standin: StandIn, files: list[Path], *, batch: int, concurrency: int, work: Path, timeout: float
) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    listing, out = work / "limit-files.txt", work / "limit-result.json"
    listing.write_text("\n".join(str(p) for p in files))
    standin.reset()
    argv = [
        sys.executable,
        "-m",
        "bench.limit",
        standin.base_url,
        API_KEY,
        str(listing),
        str(batch),
        str(concurrency),
        str(out),
    ]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    sampler = Sampler({"client": proc.pid, "stand-in": standin.pid}).start()
    sampler.mark()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise TimeoutError(f"the limit client did not finish in {timeout:.0f} s") from None
    finally:
        sampler.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"the limit client failed (exit {proc.returncode})")
    result = json.loads(out.read_text())
    if result["errors"]:
        raise RuntimeError(f"the limit client got errors: {result['errors'][:3]}")
    started: float = result["started"]
    curve, total = [], 0
    for t, n in result["done"]:
        total += n
        curve.append((round(t - started, 3), total))
    seconds = curve[-1][0]
    nbytes = sum(p.stat().st_size for p in files)
    requests = standin.upload_requests()
    cpu = sampler.cpu_window()
    return {
        "images": total,
        "seconds": round(seconds, 3),
        "images_per_s": round(total / seconds, 1),
        "mb_per_s": round(nbytes / MB / seconds, 1),
        "upload_requests": requests,
        "upload_requests_per_image": round(requests / total, 5),
        "peak_rss_mb": sampler.peak_rss_mb(),
        "cpu_s": cpu,
        "cpu_s_per_1000_images": round(cpu.get("client", 0.0) / total * 1000, 3),
        # From its first request to its last answer (without the interpreter's start).
        "cpu_s_in_run": round(result["cpu_s"], 3),
        "cpu_s_per_1000_images_in_run": round(result["cpu_s"] / total * 1000, 3),
        "curve": curve,
    }


# --- the pipeline --------------------------------------------------------------------


def _sampler(service: Service, standin: StandIn, extra: dict[str, int] | None = None) -> Sampler:
    return Sampler({**service.pids, **(extra or {}), "stand-in": standin.pid}).start()


def run_pipeline(
    standin: StandIn,
    files: list[Path],
    trickle: list[Path],
    *,
    root: Path,
    trickle_interval: float,
    timeout: float,
    database_url: str | None = None,
    database_pids: dict[str, int] | None = None,
) -> dict[str, Any]:
    """N files at once, then the trickle. The ledger is SQLite in `root` unless
    `database_url` names another; `database_pids` (a server's root pid by label)
    are sampled with the pipeline's processes, so their CPU counts as ours."""
    standin.reset()
    service = Service(root, standin.base_url, database_url=database_url).start()
    sampler = _sampler(service, standin, database_pids)
    profiler = Profiler.from_env({k: v for k, v in service.pids.items() if k != "redis"})
    try:
        sampler.mark()
        drops = {p.name: drop(p, service.inbox) for p in files}
        t0 = min(drops.values())
        wait_count(service, len(files), timeout, "the pipeline")
        sampler.sample()
        if profiler is not None:
            profiler.stop()
        cpu = sampler.cpu_window()
        requests = standin.upload_requests()
        main = _pipeline_figures(service, files, t0)
        main["upload_requests"] = requests
        main["upload_requests_per_image"] = round(requests / len(files), 5)
        main["drop_to_seen"] = percentiles(
            [seen - drops[path] for path, seen in service.query("SELECT path, seen_at FROM files")]
        )
        ours = {k: v for k, v in cpu.items() if not k.startswith("stand-in")}
        main["cpu_s"] = cpu
        main["cpu_s_per_1000_images"] = round(sum(ours.values()) / len(files) * 1000, 3)
        main["cpu_s_per_1000_images_by_process"] = {
            k: round(v / len(files) * 1000, 3) for k, v in ours.items()
        }
        main["trickle"] = _trickle(service, trickle, trickle_interval, len(files), timeout)
        main["peak_rss_mb"] = sampler.peak_rss_mb()
        return main
    finally:
        if profiler is not None:
            profiler.stop()
        sampler.stop()
        service.stop()
        service.remove()


def _pipeline_figures(service: Service, files: list[Path], t0: float) -> dict[str, Any]:
    rows = service.query("SELECT state, size, seen_at, uploaded_at, indexed_at FROM files")
    states: dict[str, int] = {}
    for state, *_ in rows:
        states[state] = states.get(state, 0) + 1
    indexed = sorted(r[4] for r in rows if r[4] is not None)
    uploaded = sorted(r[3] for r in rows if r[3] is not None)
    seconds = indexed[-1] - t0
    seconds_uploaded = uploaded[-1] - t0
    nbytes = sum(r[1] for r in rows)
    return {
        "images": len(files),
        "states": states,
        "seconds": round(seconds, 3),
        "images_per_s": round(len(indexed) / seconds, 1),
        "mb_per_s": round(nbytes / MB / seconds, 1),
        # To the last upload: without the indexing poll's wait (INGEST_POLL_INITIAL_DELAY,
        # then beat's sweep every INGEST_POLL_SWEEP_INTERVAL), which no throughput removes.
        "seconds_to_last_uploaded": round(seconds_uploaded, 3),
        "uploaded_images_per_s": round(len(uploaded) / seconds_uploaded, 1),
        "uploaded_curve": _curve([t - t0 for t in uploaded]),
        "drop_to_uploaded": percentiles([r[3] - r[2] for r in rows if r[3] is not None]),
        "drop_to_indexed": percentiles([r[4] - r[2] for r in rows if r[4] is not None]),
        "curve": _curve([t - t0 for t in indexed]),
    }


def _curve(times: list[float], points: int = 400) -> list[tuple[float, int]]:
    """(seconds, files done) at most `points` times, always with the last one."""
    step = max(1, len(times) // points)
    out = [(round(t, 3), i + 1) for i, t in enumerate(times) if (i + 1) % step == 0]
    if times and out[-1][1] != len(times):
        out.append((round(times[-1], 3), len(times)))
    return out


def _trickle(
    service: Service, files: list[Path], interval: float, before: int, timeout: float
) -> dict[str, Any]:
    """One file every `interval` seconds into the same, now idle, service."""
    if not files:
        return {}
    drops: dict[str, float] = {}
    for i, p in enumerate(files):
        if i:
            time.sleep(interval)
        drops[p.name] = drop(p, service.inbox)
    wait_count(service, before + len(files), timeout, "the trickle")
    rows = service.query(
        "SELECT path, seen_at, uploaded_at, indexed_at FROM files WHERE path IN :paths",
        paths=list(drops),
    )
    return {
        "files": len(files),
        "interval_s": interval,
        "drop_to_uploaded": percentiles([r[2] - r[1] for r in rows if r[2] is not None]),
        "drop_to_indexed": percentiles([r[3] - r[1] for r in rows if r[3] is not None]),
        "rename_to_uploaded": percentiles([r[2] - drops[r[0]] for r in rows if r[2] is not None]),
    }


def run_worker_memory(
    standin: StandIn, files: list[Path], *, root: Path, timeout: float
) -> dict[str, float]:
    """Peak RSS of the worker's processes after `len(files)` images through a fresh service."""
    standin.reset()
    service = Service(root, standin.base_url).start()
    sampler = _sampler(service, standin)
    try:
        for p in files:
            drop(p, service.inbox)
        wait_count(service, len(files), timeout, f"the pipeline at N={len(files)}")
    finally:
        sampler.stop()
        service.stop()
        service.remove()
    peaks = sampler.peak_rss_mb()
    return {k: v for k, v in peaks.items() if k.startswith(("worker", "watcher"))}


# --- the watcher alone -----------------------------------------------------------------


def run_burst(standin: StandIn, n: int, *, root: Path, timeout: float) -> dict[str, Any]:
    """`n` small files renamed into the inbox at once; only Redis and the watcher run."""
    service = Service(root, standin.base_url)
    staging = root / "staging"
    print(f"writing {n} small files for the burst")
    files = small_jpegs(staging, n)
    service.start(watcher_only=True)
    sampler = Sampler(dict(service.pids)).start()
    profiler = Profiler.from_env({"burst-watcher": service.pids["watcher"]})
    try:
        sampler.mark()
        t0 = time.time()
        for p in files:
            os.rename(p, service.inbox / p.name)
        dropped = time.time() - t0
        deadline = time.monotonic() + timeout
        while (recorded := service.count()) < n and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
        last = service.query("SELECT max(updated_at) FROM files")[0][0] or t0
        origins = dict(service.query("SELECT origin, count(*) FROM files GROUP BY origin"))
        sampler.sample()
        cpu = sampler.cpu_window()
    finally:
        if profiler is not None:
            profiler.stop()
        sampler.stop()
        service.stop()
        service.remove()
    seconds = last - t0
    return {
        "files": n,
        "drop_seconds": round(dropped, 3),
        "seconds_to_record_all": round(seconds, 3) if recorded >= n else None,
        "files_per_s": round(recorded / seconds, 1) if seconds > 0 else None,
        "recorded": recorded,
        "missed": n - recorded,
        "by_origin": origins,
        "watcher_peak_rss_mb": sampler.peak_rss_mb().get("watcher"),
        "watcher_cpu_s": cpu.get("watcher"),
        "peak_rss_mb": sampler.peak_rss_mb(),
    }

"""The dry run at scale: `reka-ingest plan DIR --json` over a tree of N files
(BENCH_PLAN_N, default 100,000; 0 skips), and over one image URL list of N lines.

The tree is N distinct tiny JPEGs (one 8x8 image made unique by a JPEG comment
segment), 500 to a folder, plus a copy of every 100th file (duplicates within
the plan) and one empty file in every folder (would fail). The plan runs as the
command a user types, in its own process, on the default settings and an
empty ledger, and the bench samples it: wall seconds, peak RSS (VmHWM) and CPU.
The same again at N/10 shows whether memory grows with the tree (it must not:
counters, a stack of folders, and the hashes seen in a table on disk).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Final

from bench.procs import Sampler
from bench.server_check import tiny_jpeg
from bench.standin_throughput import noisy_jpeg

PER_FOLDER: Final = 500
DUPLICATE_EVERY: Final = 100


def make_tree(root: Path, n: int) -> dict[str, int]:
    """N distinct images (and the copies and empty files above) under `root`."""
    base = noisy_jpeg(1, 8, 8)
    copies = empties = 0
    for i in range(n):
        folder = root / f"f{i // PER_FOLDER:05d}"
        if i % PER_FOLDER == 0:
            folder.mkdir(parents=True)
            (folder / "empty.jpg").write_bytes(b"")
            empties += 1
        blob = tiny_jpeg(i, base)
        (folder / f"c{i:07d}.jpg").write_bytes(blob)
        if i % DUPLICATE_EVERY == 0:
            (folder / f"c{i:07d}-copy.jpg").write_bytes(blob)
            copies += 1
    return {"images": n, "copies": copies, "empty": empties}


def make_list(path: Path, n: int) -> None:
    with path.open("w") as out:
        out.writelines(f"https://images.example.test/{i // 1000}/{i:07d}.jpg\n" for i in range(n))


def run_plan(target: Path, root: Path, *, timeout: float) -> dict[str, Any]:
    """Time and sample one `reka-ingest plan TARGET --json` on an empty ledger."""
    env = {
        **os.environ,
        "INGEST_DATA_DIR": str(root / "var"),
        "INGEST_INBOX": str(root / "inbox"),
        "INGEST_LOG_FORMAT": "json",
        "INGEST_LOG_LEVEL": "WARNING",
    }
    env.pop("INGEST_DATABASE_URL", None)
    (root / "var").mkdir(parents=True, exist_ok=True)
    out_path, err_path = root / "plan.json", root / "plan.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "reka_ingest.cli", "plan", str(target), "--json"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=env,
        )
        sampler = Sampler({"plan": proc.pid}).start()
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise TimeoutError(f"plan of {target} did not finish in {timeout:.0f} s") from None
        finally:
            sampler.stop()
        seconds = time.monotonic() - started
    if code != 0:
        raise RuntimeError(f"plan failed (exit {code}): {err_path.read_text()[-2000:]}")
    report = json.loads(out_path.read_text())
    return {
        "seconds": round(seconds, 2),
        "walk_seconds_reported": report["seconds"],
        "peak_rss_mb": sampler.peak_rss_mb().get("plan"),
        "cpu_s": sampler.cpu_window().get("plan"),
        "files": report["files"],
        "would_upload": report["would_upload"]["images"] + report["would_upload"]["urls"],
        "duplicates": report["duplicates"]["within_plan"],
        "would_fail": sum(report["would_fail"].values()),
        "requests": report["requests"]["total"],
        "headline": report["headline"],
    }


def run_plans(n: int, *, root: Path, timeout: float) -> dict[str, Any]:
    """The plan of a tree at N/10 and N, and of a URL list of N lines."""
    shutil.rmtree(root, ignore_errors=True)
    sizes = [n // 10, n] if n // 10 >= 1000 else [n]
    runs: dict[str, Any] = {}
    for size in sizes:
        print(f"plan: a tree of {size} files")
        tree = root / f"tree-{size}"
        t0 = time.monotonic()
        made = make_tree(tree, size)
        built = time.monotonic() - t0
        run = run_plan(tree, root / f"run-{size}", timeout=timeout)
        runs[str(size)] = {**run, "made": made, "build_seconds": round(built, 2)}
        shutil.rmtree(tree, ignore_errors=True)
    print(f"plan: a URL list of {n} lines")
    listing = root / "links.urls"
    make_list(listing, n)
    urls = run_plan(listing, root / "run-urls", timeout=timeout)
    if not os.environ.get("BENCH_KEEP"):
        shutil.rmtree(root, ignore_errors=True)
    return {"n": n, "runs": runs, "url_list": urls}

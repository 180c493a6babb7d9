"""The limit on this machine: a plain httpx client posting the same files to the
same stand-in, with the pipeline's batch size and concurrency, and nothing
else: no ledger, no queue, no checks, no moves.

Run as its own process (so its CPU and memory are its own):

    python -m bench.limit URL KEY FILE_LIST BATCH CONCURRENCY OUT_JSON

Each of CONCURRENCY threads takes the next batch of BATCH files, streams them
from disk in one multipart POST (as the worker does) and records when it
finished. OUT_JSON gets the start time, each request's (end time, images) and
`cpu_s`: this process's CPU time from the first request to the last answer (all
threads; not the interpreter's start and imports, as the pipeline's window starts
once its processes are up).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import BinaryIO

import httpx

from reka_ingest.core.constants import API_KEY_HEADER

TIMEOUT = httpx.Timeout(connect=5, read=120, write=120, pool=120)


def run(url: str, key: str, files: list[Path], batch: int, concurrency: int) -> dict[str, object]:
    batches = [files[i : i + batch] for i in range(0, len(files), batch)]
    lock = threading.Lock()
    done: list[tuple[float, int]] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    client = httpx.Client(
        base_url=url, headers={API_KEY_HEADER: key}, timeout=TIMEOUT, limits=limits
    )

    def take() -> list[Path] | None:
        with lock:
            return batches.pop(0) if batches else None

    def loop() -> None:
        while (paths := take()) is not None:
            meta = json.dumps(
                {"requests": [{"indexing_config": {"index": True}, "metadata": {}}] * len(paths)}
            )
            with ExitStack() as stack:
                parts: list[tuple[str, tuple[str, BinaryIO, str]]] = [
                    ("images", (p.name, stack.enter_context(p.open("rb")), "image/jpeg"))
                    for p in paths
                ]
                response = client.post("/v1/images/upload", data={"metadata": meta}, files=parts)
            with lock:
                if response.status_code != 200 or len(response.json()["results"]) != len(paths):
                    errors.append(f"{response.status_code}: {response.text[:200]}")
                done.append((time.time(), len(paths)))

    started, cpu_started = time.time(), time.process_time()
    threads = [threading.Thread(target=loop) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cpu_s = time.process_time() - cpu_started
    client.close()
    return {"started": started, "done": sorted(done), "errors": errors, "cpu_s": cpu_s}


def main() -> None:
    url, key, list_file, batch, concurrency, out = sys.argv[1:7]
    files = [Path(line) for line in Path(list_file).read_text().splitlines() if line]
    result = run(url, key, files, int(batch), int(concurrency))
    Path(out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()

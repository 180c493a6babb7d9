"""How fast is the stand-in server? Uploads/s, images/s and MB/s over loopback.

The stand-in is the far end of every other benchmark, so it must not be the
bottleneck. This runs it as its own process (`python -m reka_ingest.cli fake-api`, so
client and server do not share a GIL) and drives it with a minimal asyncio
HTTP/1.1 keep-alive client: each scenario's request (headers + multipart body
of real, distinct, noisy ~100 KB JPEGs) is built once, then sent over a few
connections as fast as the server answers. The client only parses status
line and Content-Length, so what is measured is the server.

Each scenario runs for a bounded time and a bounded volume, then
`POST /_standin/reset` empties the in-memory store before the next one.

    python -m bench.standin_throughput [--seconds 5] [--connections 4] [--sizes 1,10,100]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import httpx
from PIL import Image

from reka_ingest.core.constants import API_KEY_HEADER

HOST: Final = "127.0.0.1"
KEY: Final = "bench-key"
TARGET_IMAGE_BYTES: Final = 100 * 1024
JPEG_QUALITY: Final = 90
ASPECT: Final = 4 / 3
MAX_SCENARIO_BYTES: Final = 2 * 1024**3  # cap what one scenario leaves in server memory
START_TIMEOUT: Final = 20.0
BOUNDARY: Final = "standin-bench-boundary-7d1f0c"
MB: Final = 1024 * 1024


def noisy_jpeg(seed: int, width: int, height: int) -> bytes:
    """A deterministic JPEG of RGB noise: it cannot compress to nothing."""
    rng = random.Random(seed)
    img = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def calibrated_images(count: int) -> list[bytes]:
    """`count` distinct JPEGs of about TARGET_IMAGE_BYTES each."""
    probe_w, probe_h = 320, 240
    per_pixel = len(noisy_jpeg(0, probe_w, probe_h)) / (probe_w * probe_h)
    height = int((TARGET_IMAGE_BYTES / per_pixel / ASPECT) ** 0.5)
    width = int(height * ASPECT)
    return [noisy_jpeg(seed, width, height) for seed in range(count)]


def upload_request(port: int, images: list[bytes]) -> bytes:
    """The full HTTP/1.1 request (head + multipart body), built once per scenario."""
    parts = []
    for i, data in enumerate(images):
        parts.append(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="images"; '
            f'filename="bench{i:03d}.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'.encode()
            + data
            + b"\r\n"
        )
    entries = [{"indexing_config": {"index": True}, "metadata": {"camera_id": "bench"}}] * len(
        images
    )
    parts.append(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="metadata"\r\n\r\n'.encode()
        + json.dumps({"requests": entries}).encode()
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    body = b"".join(parts)
    head = (
        f"POST /v1/images/upload HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        f"{API_KEY_HEADER}: {KEY}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


@dataclass
class Tally:
    requests: int = 0
    failures: int = 0


async def connection(port: int, request: bytes, deadline: float, budget: int, t: Tally) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        while time.perf_counter() < deadline and (t.requests + 1) * len(request) <= budget:
            writer.write(request)
            status, _ = await read_response(reader)
            t.requests += 1
            if status != 200:
                t.failures += 1
    finally:
        writer.close()
        await writer.wait_closed()


async def run_scenario(
    port: int, request: bytes, seconds: float, connections: int
) -> tuple[Tally, float]:
    tally = Tally()
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(
        *(
            connection(port, request, deadline, MAX_SCENARIO_BYTES, tally)
            for _ in range(connections)
        )
    )
    return tally, time.perf_counter() - started


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_up(base_url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            httpx.get(f"{base_url}/_standin/stats", headers={API_KEY_HEADER: KEY})
            return
        except httpx.TransportError:
            if server.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the stand-in did not start; its output:\n{tail}") from None
            time.sleep(0.1)


def check_once(base_url: str, images: list[bytes]) -> None:
    """One upload through httpx first: the bench must measure correct answers."""
    files = [("images", (f"{i}.jpg", d, "image/jpeg")) for i, d in enumerate(images)]
    meta = json.dumps({"requests": [{"metadata": {}}] * len(images)})
    response = httpx.post(
        f"{base_url}/v1/images/upload",
        headers={API_KEY_HEADER: KEY},
        files=files,
        data={"metadata": meta},
        timeout=60,
    )
    response.raise_for_status()
    if len(response.json()["results"]) != len(images):
        raise RuntimeError("stand-in returned the wrong number of results")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per scenario")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--sizes", default="1,10,100", help="images per request")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    images = calibrated_images(max(sizes))
    mean_kb = sum(len(i) for i in images) / len(images) / 1024
    port = free_port()
    base_url = f"http://{HOST}:{port}"
    log = Path(tempfile.mkstemp(prefix="standin-bench-", suffix=".log")[1])
    with log.open("wb") as out:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "reka_ingest.cli",
                "fake-api",
                "--port",
                str(port),
                "--api-key",
                KEY,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=os.environ | {"INGEST_LOG_LEVEL": "WARNING"},
        )
    rows = []
    try:
        wait_until_up(base_url, server, log)
        for size in sizes:
            batch = images[:size]
            check_once(base_url, batch)
            request = upload_request(port, batch)
            tally, elapsed = asyncio.run(
                run_scenario(port, request, args.seconds, args.connections)
            )
            httpx.post(f"{base_url}/_standin/reset", headers={API_KEY_HEADER: KEY})
            rows.append((size, len(request), tally, elapsed))
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.unlink()

    print(
        f"stand-in upload throughput: {args.connections} connections, {args.seconds:g} s per "
        f"scenario, JPEGs of {mean_kb:.0f} KB mean, {os.cpu_count()} CPUs (client and server)"
    )
    print(
        f"{'images/req':>10} {'req MB':>7} {'requests':>9} {'errors':>6} "
        f"{'req/s':>9} {'images/s':>9} {'MB/s':>8}"
    )
    for size, req_bytes, tally, elapsed in rows:
        print(
            f"{size:>10} {req_bytes / MB:>7.2f} {tally.requests:>9} {tally.failures:>6} "
            f"{tally.requests / elapsed:>9.1f} {tally.requests * size / elapsed:>9.1f} "
            f"{tally.requests * req_bytes / elapsed / MB:>8.1f}"
        )


if __name__ == "__main__":
    main()

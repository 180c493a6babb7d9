"""The bench's input: real, deterministic JPEGs, generated once and cached.

`jpegs(n)` returns the paths of the first `n` images of one fixed series
(about 100 KB of RGB noise each, so they neither compress to nothing nor
repeat each other's bytes); only the missing ones are generated. The cache
lives in `bench/.cache/` (gitignored) on the same filesystem as the runs'
inboxes, so a drop is a hardlink plus a rename, not a copy.

`small_jpegs(folder, n)` writes `n` distinct tiny JPEGs for the watcher burst:
one small image, each copy made unique by a JPEG comment segment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from bench.standin_throughput import ASPECT, TARGET_IMAGE_BYTES, noisy_jpeg

CACHE: Final = Path(__file__).resolve().parent / ".cache"
JPEG_DIR: Final = CACHE / "jpeg-100k"
PROBE: Final = (320, 240)


def image_size() -> tuple[int, int]:
    """Width and height that make a noise JPEG of about TARGET_IMAGE_BYTES."""
    per_pixel = len(noisy_jpeg(0, *PROBE)) / (PROBE[0] * PROBE[1])
    height = int((TARGET_IMAGE_BYTES / per_pixel / ASPECT) ** 0.5)
    return int(height * ASPECT), height


def jpeg_path(index: int) -> Path:
    return JPEG_DIR / f"img-{index:06d}.jpg"


def jpegs(n: int) -> list[Path]:
    """The first `n` cached JPEGs, generating the missing ones (written whole, then renamed)."""
    JPEG_DIR.mkdir(parents=True, exist_ok=True)
    paths = [jpeg_path(i) for i in range(n)]
    missing = [i for i, p in enumerate(paths) if not p.exists()]
    if missing:
        width, height = image_size()
        print(f"generating {len(missing)} JPEGs of {width}x{height} in {JPEG_DIR} (once)")
        for i in missing:
            tmp = paths[i].with_suffix(".tmp")
            tmp.write_bytes(noisy_jpeg(i, width, height))
            os.replace(tmp, paths[i])
    return paths


def small_jpegs(folder: Path, n: int) -> list[Path]:
    """`n` distinct JPEGs of a few hundred bytes in `folder` (not cached: the burst moves them)."""
    folder.mkdir(parents=True, exist_ok=True)
    base = noisy_jpeg(1, 8, 8)
    head, tail = base[:2], base[2:]  # SOI, then the rest; a COM segment goes between
    paths = []
    for i in range(n):
        comment = f"reka-ingest bench burst {i:07d}".encode()
        segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
        path = folder / f"s{i:07d}.jpg"
        path.write_bytes(head + segment + tail)
        paths.append(path)
    return paths

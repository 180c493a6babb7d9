"""A file's content hash: sha256 of its bytes, streamed, `HASH_CHUNK_BYTES` at a time.

The content hash is a file's identity (the same bytes are never uploaded
twice), so every reader that records one (the watcher's claim, `reka-ingest
retry`) computes it here. The hash of the bytes an upload really carried is
taken by the client as it streams them (`reka_ingest.reka.client.HashingReader`).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from reka_ingest.core.constants import HASH_CHUNK_BYTES

# Below glibc's mmap threshold (128 KiB): such a buffer comes from the heap, reused.
MIN_HASH_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class Digest:
    """The sha256 (hex) and the length of the bytes read."""

    sha256: str
    size: int


def _chunk(fd: int) -> int:
    """The read size for `fd`: HASH_CHUNK_BYTES, or less for a smaller file (one byte
    more than it holds, to see its end in one read, and at least MIN_HASH_CHUNK).
    A fresh zeroed MiB for each small file of a burst costs more than hashing it."""
    try:
        size = os.fstat(fd).st_size
    except OSError:
        return HASH_CHUNK_BYTES
    return min(HASH_CHUNK_BYTES, max(size + 1, MIN_HASH_CHUNK))


def digest_of(fd: int) -> Digest:
    """Stream an open file's bytes, from where it stands to its end, through sha256."""
    digest = hashlib.sha256()
    size = 0
    buf = bytearray(_chunk(fd))
    view = memoryview(buf)
    while n := os.readv(fd, [buf]):
        digest.update(view[:n])
        size += n
    return Digest(digest.hexdigest(), size)


def whole_small_file(fd: int, size: int) -> bytes | None:
    """All of an open file's `size` bytes in one read, when `size` is at most
    HASH_CHUNK_BYTES (a burst's photos: read once, for the EXIF check and the hash
    alike); None for a larger file, and when the read fails or finds another size
    (it changed since `fstat`): the streamed reading then meets that itself."""
    if size > HASH_CHUNK_BYTES:
        return None
    try:
        data = os.pread(fd, size + 1, 0)
    except OSError:
        return None
    return data if len(data) == size else None


def sha256_of_bytes(data: bytes) -> str:
    """The sha256 (hex) of bytes already read (see `whole_small_file`)."""
    return hashlib.sha256(data).hexdigest()


def sha256_of(fd: int) -> str:
    """The sha256 (hex) of an open file's bytes."""
    return digest_of(fd).sha256


def digest_file(path: str | os.PathLike[str]) -> Digest:
    """The sha256 and length of the file at `path`."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return digest_of(fd)
    finally:
        os.close(fd)

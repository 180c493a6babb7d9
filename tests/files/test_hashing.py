"""The content hash (`reka_ingest.files.hashing`): every size hashes to hashlib's
answer, whatever read size the file's length picks, from where the file stands."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from reka_ingest.core.constants import HASH_CHUNK_BYTES
from reka_ingest.files.hashing import (
    MIN_HASH_CHUNK,
    digest_file,
    digest_of,
    sha256_of,
    sha256_of_bytes,
    whole_small_file,
)

SIZES = (
    0,
    1,
    400,
    MIN_HASH_CHUNK - 1,
    MIN_HASH_CHUNK,
    MIN_HASH_CHUNK + 1,
    HASH_CHUNK_BYTES,
    HASH_CHUNK_BYTES + 3,
)


@pytest.mark.parametrize("size", SIZES)
def test_every_size_hashes_like_hashlib(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    got = digest_file(path)
    assert (got.sha256, got.size) == (hashlib.sha256(data).hexdigest(), size)


def test_from_where_the_file_stands(tmp_path: Path) -> None:
    data = os.urandom(1000)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.lseek(fd, 100, os.SEEK_SET)
        assert digest_of(fd).size == 900
        os.lseek(fd, 0, os.SEEK_SET)
        assert sha256_of(fd) == hashlib.sha256(data).hexdigest()
    finally:
        os.close(fd)


@pytest.mark.parametrize("size", SIZES)
def test_a_small_file_is_read_whole_once_and_hashes_alike(tmp_path: Path, size: int) -> None:
    """`whole_small_file` (describe's one read) gives every byte of a file up to
    HASH_CHUNK_BYTES and nothing for a larger one; its hash is the streamed one's."""
    data = os.urandom(size)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        whole = whole_small_file(fd, size)
        streamed = sha256_of(fd)
    finally:
        os.close(fd)
    if size > HASH_CHUNK_BYTES:
        assert whole is None
    else:
        assert whole == data
        assert sha256_of_bytes(whole) == streamed


def test_a_file_that_changed_since_its_stat_is_left_to_the_streamed_read(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 1000)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert whole_small_file(fd, 999) is None  # grew: more than fstat said
        assert whole_small_file(fd, 1001) is None  # shrank
    finally:
        os.close(fd)

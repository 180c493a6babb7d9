"""The client hashes each file as httpx streams it into the multipart body.

Property: whatever the bytes and however they are read (any chunk sizes, any
number of rewinds to the start, as httpx does before it renders a part again),
`sent` is the sha256 and length of the bytes read since the last rewind.
Then through httpx's own multipart encoder (rendered twice), and through a
real upload to the stand-in, whose stored bytes must hash to what `sent` says.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reka_ingest.reka.client import HashingReader
from tests.client.standin_support import client_for, jpeg_items, running_standin

_counter = itertools.count()

# One step of a reader's use: read up to n bytes (n = -1: all the rest), or rewind.
STEPS = st.lists(
    st.one_of(st.integers(min_value=-1, max_value=70_000), st.just("rewind")), max_size=25
)


def _digest(data: bytes) -> tuple[str, int]:
    return hashlib.sha256(data).hexdigest(), len(data)


@settings(max_examples=200, deadline=None)
@given(content=st.binary(max_size=200_000), steps=STEPS, last_chunk=st.integers(1, 70_000))
def test_sent_is_the_digest_of_the_bytes_read_since_the_last_rewind(
    tmp_path_factory: pytest.TempPathFactory,
    content: bytes,
    steps: list[int | str],
    last_chunk: int,
) -> None:
    path = tmp_path_factory.getbasetemp() / f"hashing-{next(_counter)}.bin"
    path.write_bytes(content)
    try:
        with path.open("rb") as raw:
            reader = HashingReader(raw)
            position = 0
            for step in steps:
                if step == "rewind":
                    assert reader.seek(0) == 0
                    position = 0
                else:
                    assert isinstance(step, int)
                    chunk = reader.read(step)
                    end = len(content) if step < 0 else min(len(content), position + step)
                    assert chunk == content[position:end]
                    position = end
                assert (reader.sent.sha256, reader.sent.size) == _digest(content[:position])
                assert reader.tell() == position
            # What httpx does for a part: rewind, then read chunks until b"".
            reader.seek(0)
            while reader.read(last_chunk):
                pass
            assert (reader.sent.sha256, reader.sent.size) == _digest(content)
    finally:
        path.unlink()


def test_a_seek_other_than_a_rewind_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(b"0123456789")
    with path.open("rb") as raw:
        reader = HashingReader(raw)
        reader.read(4)
        assert reader.seek(4) == 4  # staying put is fine
        assert reader.seek(0, os.SEEK_CUR) == 4
        with pytest.raises(io.UnsupportedOperation):
            reader.seek(2)
        with pytest.raises(io.UnsupportedOperation):
            reader.seek(0, os.SEEK_END)
        assert reader.sent.size == 4 and reader.read() == b"456789"


def test_httpx_multipart_measures_the_file_and_rewinds_before_each_rendering(
    tmp_path: Path,
) -> None:
    content = os.urandom(200_000)  # several of httpx's 64 KiB chunks
    path = tmp_path / "big.bin"
    path.write_bytes(content)
    with path.open("rb") as raw:
        reader = HashingReader(raw)
        request = httpx.Request(
            "POST",
            "http://127.0.0.1:9/upload",
            files=[("images", ("big.bin", reader, "application/octet-stream"))],  # type: ignore[list-item]
        )
        # The length came from fstat through fileno(): no chunked encoding, nothing read yet.
        assert "transfer-encoding" not in request.headers
        assert reader.sent.size == 0
        for _ in range(2):  # a second rendering (a re-send) starts the digest over
            body = b"".join(request.stream)  # type: ignore[arg-type]
            assert len(body) == int(request.headers["content-length"])
            assert content in body
            assert (reader.sent.sha256, reader.sent.size) == _digest(content)


def test_an_upload_reports_the_digests_of_the_bytes_the_server_stored(tmp_path: Path) -> None:
    items = jpeg_items(tmp_path, 3)
    with running_standin() as server, client_for(server) as client:
        result = client.upload(items)
        assert len(result.sent) == 3
        for item, image, sent in zip(items, result.images, result.sent, strict=True):
            assert (sent.sha256, sent.size) == _digest(item.path.read_bytes())
            stored = server.state.store.data(image.image_id)
            assert stored is not None and hashlib.sha256(stored).hexdigest() == sent.sha256

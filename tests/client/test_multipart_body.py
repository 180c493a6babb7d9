"""The upload body is httpx's own multipart encoding, byte for byte, in fewer pieces.

Property: for any metadata text, filenames (quotes, backslashes, control
characters, non-ASCII) and file contents (empty to several pieces long), the
body's bytes and its Content-Length equal what httpx's encoder makes with the
same boundary, and each HashingReader's `sent` is the digest of its file.
"""

from __future__ import annotations

import hashlib
import itertools
from contextlib import ExitStack
from pathlib import Path

import pytest
from httpx._multipart import MultipartStream
from hypothesis import given, settings
from hypothesis import strategies as st

from reka_ingest.reka.client import HashingReader
from reka_ingest.reka.multipart import PIECE_BYTES, UploadBody

_counter = itertools.count()
BOUNDARY = b"0123456789abcdef0123456789abcdef"

FILES = st.lists(
    st.tuples(
        st.text(min_size=1, max_size=20),
        st.sampled_from(["image/jpeg", "image/png"]),
        st.one_of(st.binary(max_size=2_000), st.integers(0, 3 * PIECE_BYTES).map(bytes)),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=60, deadline=None)
@given(metadata=st.text(max_size=200), files=FILES)
def test_the_body_is_httpx_multipart_byte_for_byte(
    tmp_path_factory: pytest.TempPathFactory,
    metadata: str,
    files: list[tuple[str, str, bytes]],
) -> None:
    folder = tmp_path_factory.getbasetemp() / f"multipart-{next(_counter)}"
    folder.mkdir()
    paths = []
    for i, (_, _, content) in enumerate(files):
        path = folder / f"{i}.bin"
        path.write_bytes(content)
        paths.append(path)
    with ExitStack() as stack:
        readers = [HashingReader(stack.enter_context(p.open("rb"))) for p in paths]
        body = UploadBody(
            [("metadata", metadata)],
            [
                ("images", name, ctype, reader)
                for (name, ctype, _), reader in zip(files, readers, strict=True)
            ],
            boundary=BOUNDARY,
        )
        pieces = list(body)
        assert all(len(p) < 2 * PIECE_BYTES + 4096 for p in pieces)
        ours = b"".join(pieces)
        assert [r.sent.sha256 for r in readers] == [
            hashlib.sha256(content).hexdigest() for _, _, content in files
        ]
        theirs_files = [
            ("images", (name, stack.enter_context(p.open("rb")), ctype))
            for (name, ctype, _), p in zip(files, paths, strict=True)
        ]
        stream = MultipartStream({"metadata": metadata}, theirs_files, boundary=BOUNDARY)
        theirs = b"".join(stream)
        assert ours == theirs
        assert body.headers == {
            "Content-Type": stream.get_headers()["Content-Type"],
            "Content-Length": str(len(theirs)),
        }


def test_before_end_runs_once_before_the_last_piece_and_raising_there_ends_the_body(
    tmp_path: Path,
) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(bytes(3 * PIECE_BYTES))
    seen: list[int] = []

    class Refused(Exception):
        pass

    def refuse() -> None:
        seen.append(len(pieces))
        raise Refused

    with path.open("rb") as fh:
        whole = list(UploadBody([], [("images", "a", "image/jpeg", fh)], boundary=BOUNDARY))
        pieces: list[bytes] = []
        parts = [("images", "a", "image/jpeg", fh)]
        body = UploadBody([], parts, boundary=BOUNDARY, before_end=refuse)
        with pytest.raises(Refused):
            for piece in body:
                pieces.append(piece)
    assert len(whole) > 2
    assert seen == [len(whole) - 1]  # called once, with every piece but the last handed over
    assert pieces == whole[:-1]

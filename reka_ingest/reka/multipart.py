"""The upload's multipart/form-data body, streamed in few large pieces.

httpx's own encoder hands the connection five pieces per file (boundary,
headers, two 64 KiB reads, the closing CRLF), and each piece costs a trip
through httpcore and h11 and a `send` of its own: for a batch of 100 small
photos that per-piece work cost more CPU than the bytes themselves. This body
is the same bytes, byte for byte (the same part headers, escaped as httpx
escapes them, the same Content-Length from each open file's size), joined into
pieces of about `PIECE_BYTES`, so a request of 100 files of 100 KB goes out in
about 40 pieces instead of 500.

Files are read through their `HashingReader`s, each from its start, once per
rendering, so each reader's `sent` is what the request carried; nothing is
held in memory beyond one piece (plus at most one read).

`before_end`, if given, is called before the last piece is handed over: the
server cannot have a whole request until it returns, and if it raises, the
iteration raises with it, the connection is dropped mid-body, and no server
takes a request whose body never arrived whole. The uploader records that the
files are being sent there, while the first pieces are already on their way.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Final, Protocol

import httpx

# Pieces handed to the connection: large enough that the per-piece work is small
# next to the copy, small enough that a partial `send` (httpcore copies what is
# left) stays cheap.
PIECE_BYTES: Final = 256 * 1024

# How httpx (and HTML5 forms) escape a part's name and filename: `"` and control
# characters (but ESC) percent-encoded, a backslash doubled.
_ESCAPES: Final = {'"': "%22", "\\": "\\\\"} | {
    chr(c): f"%{c:02X}" for c in range(0x20) if c != 0x1B
}
_ESCAPE_RE: Final = re.compile("|".join(re.escape(ch) for ch in _ESCAPES))


class Readable(Protocol):
    """An open file as the body reads it: from the start (`seek(0)`), in chunks."""

    def read(self, size: int = -1) -> bytes: ...

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int: ...

    def fileno(self) -> int: ...


def _param(name: str, value: str) -> bytes:
    return f'{name}="{_ESCAPE_RE.sub(lambda m: _ESCAPES[m.group(0)], value)}"'.encode()


def _part_head(boundary: bytes, name: str, filename: str | None, content_type: str | None) -> bytes:
    """A part's opening: its boundary line and headers, through the blank line."""
    head = [b"--", boundary, b"\r\nContent-Disposition: form-data; ", _param("name", name)]
    if filename:
        head += [b"; ", _param("filename", filename)]
    if content_type is not None:
        head += [b"\r\nContent-Type: ", content_type.encode()]
    head.append(b"\r\n\r\n")
    return b"".join(head)


class UploadBody(httpx.SyncByteStream):
    """`fields` (name, text) then `files` (name, filename, content type, open file), as
    multipart/form-data; `headers` are the request's Content-Type and Content-Length.
    `before_end`: see the module's docstring."""

    def __init__(
        self,
        fields: Sequence[tuple[str, str]],
        files: Sequence[tuple[str, str, str, Readable]],
        *,
        boundary: bytes | None = None,
        before_end: Callable[[], None] | None = None,
    ) -> None:
        self.before_end = before_end
        self.boundary = boundary if boundary is not None else os.urandom(16).hex().encode("ascii")
        self._fields = [
            _part_head(self.boundary, name, None, None) + value.encode() + b"\r\n"
            for name, value in fields
        ]
        self._files = [
            (_part_head(self.boundary, name, filename, content_type), fh)
            for name, filename, content_type, fh in files
        ]
        self._end = b"--" + self.boundary + b"--\r\n"
        length = sum(map(len, self._fields)) + len(self._end)
        for head, fh in self._files:  # the sizes now, as httpx measures a file part
            length += len(head) + os.fstat(fh.fileno()).st_size + 2
        self.headers = {
            "Content-Type": f"multipart/form-data; boundary={self.boundary.decode('ascii')}",
            "Content-Length": str(length),
        }

    def __iter__(self) -> Iterator[bytes]:
        pieces: list[bytes] = list(self._fields)
        held = sum(map(len, pieces))
        for head, fh in self._files:
            pieces.append(head)
            held += len(head)
            fh.seek(0)  # a reader's digest starts over here
            while chunk := fh.read(PIECE_BYTES):
                pieces.append(chunk)
                held += len(chunk)
                if held >= PIECE_BYTES:
                    yield b"".join(pieces)
                    pieces, held = [], 0
            pieces.append(b"\r\n")
            held += 2
        pieces.append(self._end)
        if self.before_end is not None:
            self.before_end()  # raising here: the request never ends (see the module)
        yield b"".join(pieces)

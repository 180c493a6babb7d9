"""A real HTTP server on loopback that serves images for URL uploads to fetch.

`http.server.ThreadingHTTPServer` in a daemon thread: each path answers what
a test put there (bytes and a content type, a redirect, a status, a slow
body), anything else is a 404. It counts the requests per path, so a test
can tell what the stand-in fetched.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.images import image_bytes


@dataclass(frozen=True)
class Answer:
    """What one path answers: a status, headers, a body, and a delay before the body."""

    status: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0
    length: bool = True  # send Content-Length; False: the body ends when the connection does


class ImageServer:
    """Paths -> answers, served on 127.0.0.1; `url(path)` is where a path lives."""

    def __init__(self, server: ThreadingHTTPServer) -> None:
        self._server = server
        self._answers: dict[str, Answer] = {}
        self._lock = threading.Lock()
        self.hits: Counter[str] = Counter()
        host, port = server.server_address[:2]
        self.base_url = f"http://{host!s}:{port}"

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def put(self, path: str, data: bytes, content_type: str = "image/jpeg") -> str:
        """Serve `data` at `path`; its URL."""
        return self.answer(path, Answer(body=data, headers=(("Content-Type", content_type),)))

    def put_image(self, path: str, seed: int, fmt: str = "JPEG") -> tuple[str, bytes]:
        """A real image made with Pillow at `path`; its URL and bytes."""
        data = image_bytes(seed, fmt=fmt)
        kind = "image/png" if fmt == "PNG" else "image/jpeg"
        return self.put(path, data, kind), data

    def redirect(self, path: str, target: str, status: int = 302) -> str:
        """`path` redirects to `target` (a URL, or a path on this server)."""
        location = target if "://" in target else self.url(target)
        return self.answer(path, Answer(status=status, headers=(("Location", location),)))

    def answer(self, path: str, answer: Answer) -> str:
        with self._lock:
            self._answers["/" + path.lstrip("/")] = answer
        return self.url(path)

    def lookup(self, path: str) -> Answer:
        with self._lock:
            self.hits[path] += 1
            return self._answers.get(path, Answer(status=404, body=b"no such image"))


class _Handler(BaseHTTPRequestHandler):
    server: Any  # a ThreadingHTTPServer carrying `images`

    def do_GET(self) -> None:
        images: ImageServer = self.server.images
        answer = images.lookup(self.path.split("?", 1)[0])
        self.send_response(answer.status)
        for name, value in answer.headers:
            self.send_header(name, value)
        if answer.length:
            self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        if answer.delay:
            time.sleep(answer.delay)
        # The fetcher may have given up on a slow body and closed the connection.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(answer.body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: pytest shows failures, not every fetch."""


@contextmanager
def serve_images() -> Iterator[ImageServer]:
    """An `ImageServer` on a free loopback port for the duration of the block."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    images = ImageServer(server)
    server.images = images  # type: ignore[attr-defined]
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        name="image-server",
        daemon=True,
    )
    thread.start()
    try:
        yield images
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def closed_port_url(path: str = "img.jpg") -> str:
    """An http URL on loopback where nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/{path}"

"""A real webhook receiver on loopback for the notification tests: a
`ThreadingHTTPServer` in a thread that records every POST (path, headers, JSON
body) and can answer 500 to the first N posts or wait before answering."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Post:
    path: str
    headers: dict[str, str]
    raw: bytes

    @property
    def body(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.raw)
        return parsed


@dataclass
class Receiver:
    """What the server does and what it got. `fail_first`: posts answered `fail_status`
    (500) first; `delay`: seconds to wait before answering each post."""

    fail_first: int = 0
    fail_status: int = 500
    delay: float = 0.0
    port: int = 0
    posts: list[Post] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def record(self, post: Post) -> int:
        with self._lock:
            self.posts.append(post)
            return len(self.posts)

    @property
    def bodies(self) -> list[dict[str, Any]]:
        with self._lock:
            return [p.body for p in self.posts]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [b for b in self.bodies if b.get("event") == name]

    def wait(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.posts) < count:
            time.sleep(0.05)
        return self.bodies


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            n = receiver.record(Post(self.path, headers, raw))
            if receiver.delay:
                time.sleep(receiver.delay)
            status = receiver.fail_status if n <= receiver.fail_first else 200
            reply = b'{"ok": true}' if status == 200 else b'{"error": "boom"}'
            try:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)
            except OSError:
                pass  # the client gave up waiting (the timeout test)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


@contextmanager
def receiving(
    *, fail_first: int = 0, fail_status: int = 500, delay: float = 0.0
) -> Iterator[Receiver]:
    """A receiver listening on 127.0.0.1 (a free port) until the block ends."""
    receiver = Receiver(fail_first=fail_first, fail_status=fail_status, delay=delay)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    server.daemon_threads = True
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="webhook", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

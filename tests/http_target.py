"""A local HTTP server on 127.0.0.1 that records every request (the target of http jobs in tests)."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Target:
    url: str
    hits: list[tuple[str, str, float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self) -> int:
        with self.lock:
            return len(self.hits)

    def wait_for(self, hits: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.count() < hits:
            time.sleep(0.1)
        return self.count()


@contextmanager
def http_target(*, delay: float = 0.0) -> Iterator[Target]:
    """Serve on a free loopback port until the block ends; 200 ``ok`` to GET and POST.

    ``delay`` seconds pass between recording a request and answering it (a slow endpoint).
    """
    target = Target(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            with target.lock:
                target.hits.append((self.command, self.path, time.time()))
            if delay:
                time.sleep(delay)
            body = b"ok"
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = _answer
        do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    target.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="http-target", daemon=True)
    thread.start()
    try:
        yield target
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

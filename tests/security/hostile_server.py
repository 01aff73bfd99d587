"""A loopback HTTP server that behaves badly on purpose (the target of the security tests).

Paths:
  ``/small``    200 ``ok``
  ``/big``      200 with a 96 MiB body (Content-Length), streamed from one 64 KiB block
  ``/bomb``     200 ``Content-Encoding: gzip``: ~100 KiB that inflate to 96 MiB of zeros
  ``/trickle``  200, then one byte every 0.25 s (each read is quick, the response never ends)
  ``/echo``     200 with the request line's target as the body
  ``/fail``     500 ``nope``
Every request's target and headers are recorded.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

MIB = 1024 * 1024
BIG_BYTES = 96 * MIB
BLOCK = b"x" * (64 * 1024)
TRICKLE_INTERVAL = 0.25


@functools.cache
def gzip_bomb() -> bytes:
    """96 MiB of zeros, gzip-compressed (about 100 KiB)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    zeros = bytes(MIB)
    return b"".join(compressor.compress(zeros) for _ in range(BIG_BYTES // MIB)) + compressor.flush()


@dataclass
class HostileServer:
    url: str = ""
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def hostile_server() -> Iterator[HostileServer]:
    served = HostileServer()

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            with served.lock:
                served.requests.append((self.path, dict(self.headers.items())))
            route = self.path.split("?", 1)[0]
            # The client may stop reading: that is the point of most of these.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                getattr(self, "_" + route.strip("/"), self._small)()

        def _send(self, status: int, body: bytes, **headers: str) -> None:
            self.send_response(status)
            self.send_header("content-length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name.replace("_", "-"), value)
            self.end_headers()
            self.wfile.write(body)

        def _small(self) -> None:
            self._send(200, b"ok")

        def _echo(self) -> None:
            self._send(200, self.path.encode())

        def _fail(self) -> None:
            self._send(500, b"nope")

        def _bomb(self) -> None:
            self._send(200, gzip_bomb(), content_encoding="gzip", content_type="text/plain")

        def _big(self) -> None:
            self.send_response(200)
            self.send_header("content-length", str(BIG_BYTES))
            self.end_headers()
            for _ in range(BIG_BYTES // len(BLOCK)):
                self.wfile.write(BLOCK)

        def _trickle(self) -> None:
            self.send_response(200)
            self.send_header("content-length", str(10**6))
            self.end_headers()
            self.wfile.flush()
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                self.wfile.write(b".")
                self.wfile.flush()
                time.sleep(TRICKLE_INTERVAL)

        do_GET = _answer
        do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    served.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="hostile-server", daemon=True)
    thread.start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

"""Loopback HTTP servers for the alert tests: a webhook receiver and a target whose answer the
test switches (ok, failing, hanging). Standard library only."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Received:
    body: bytes
    headers: dict[str, str]

    @property
    def json(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.body)
        return document


class Switchable:
    """A threaded HTTP server on a fixed loopback port: ``start``/``stop`` at will (a receiver
    that is down refuses connections), answering every POST with ``status`` after ``hang``
    seconds. Every request is recorded (with its headers)."""

    def __init__(self, *, port: int | None = None, status: int = 200) -> None:
        self.port = port or free_port()
        self.status = status
        self.hang = 0.0
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Switchable:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                with owner.lock:
                    owner.received.append(Received(body, {k.lower(): v for k, v in self.headers.items()}))
                    status, hang = owner.status, owner.hang
                if hang:
                    time.sleep(hang)
                answer = b"ok" if status < 300 else b"receiver says no"
                try:
                    self.send_response(status)
                    self.send_header("content-length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except OSError:
                    pass  # the client gave up (its timeout)

            do_GET = do_POST

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def events(self, event: str | None = None) -> list[Received]:
        with self.lock:
            items = list(self.received)
        return [r for r in items if event is None or r.json.get("event") == event]

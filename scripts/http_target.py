#!/usr/bin/env python3
"""A tiny HTTP server for trying tickwork's http jobs: 200 with a short JSON echo to every request.

    python3 scripts/http_target.py &          # http://127.0.0.1:8080, the README's seed job's target
    python3 scripts/http_target.py --port 0   # a free port (the first line printed says which)

Standard library only. Every request (GET, POST, PUT, PATCH, DELETE, HEAD, any path) answers
``{"ok": true, "method": ..., "path": ..., "bytes": <body size>}`` and prints one line to stderr
(``--quiet`` turns that off). Stop it with Ctrl-C, SIGTERM or ``kill %1``.
"""

from __future__ import annotations

import argparse
import http.server
import json
import signal
import sys
import time
from types import FrameType


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "tickwork-http-target"
    quiet = False

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        body = json.dumps({"ok": True, "method": self.command, "path": self.path, "bytes": length}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        if not self.quiet:
            stamp = time.strftime("%H:%M:%S")
            print(f"http_target: {stamp} {self.command} {self.path} ({length} bytes) -> 200", file=sys.stderr)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per request is printed by _answer


def port_number(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is out of range: must be from 0 to 65535")
    return port


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Answer 200 with a JSON echo to every HTTP request.")
    parser.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1")
    parser.add_argument("--port", type=port_number, default=8080, help="default 8080; 0 picks a free one")
    parser.add_argument("--quiet", action="store_true", help="do not print a line per request")
    args = parser.parse_args(argv)
    Handler.quiet = args.quiet
    try:
        server = http.server.ThreadingHTTPServer((args.host, args.port), Handler)
    except OSError as exc:
        reason = exc.strerror or exc
        print(f"http_target: cannot listen on {args.host}:{args.port}: {reason}", file=sys.stderr)
        return 1

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    print(f"http_target: listening on http://{args.host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

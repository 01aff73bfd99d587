"""A loopback TCP proxy for network faults between one process and one service.

The process is pointed at the proxy's port instead of the service's; the test then makes the
network between them slow (:meth:`TcpProxy.delay`), stalled (:meth:`TcpProxy.stall`: bytes are
held, as in a blackholed link whose TCP keeps retransmitting, and flow again on :meth:`heal`)
or cut (:meth:`TcpProxy.cut`: every connection is reset and new ones are refused with a reset
until :meth:`heal`). Runs an asyncio loop in a daemon thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from typing import Any

from tests.private_services import free_port

CHUNK = 65536


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``host:target_port``, with faults on demand."""

    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.target_port = target_port
        self.port = free_port()
        self.latency = 0.0
        self.mode = "pass"  # "pass" | "stall" | "cut"
        self.connections = 0
        self._flowing = asyncio.Event()
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"tcp-proxy-{self.port}", daemon=True)

    def url_for(self, url: str) -> str:
        """``url`` with the service's port replaced by the proxy's."""
        return url.replace(f":{self.target_port}", f":{self.port}", 1)

    def start(self) -> TcpProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the proxy did not start")
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._flowing.set()
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)
        )
        self._ready.set()
        self._loop.run_forever()

    def _call(self, fn: Any) -> None:
        done = threading.Event()

        def wrapped() -> None:
            try:
                fn()
            finally:
                done.set()

        self._loop.call_soon_threadsafe(wrapped)
        done.wait(5)

    # -- faults ---------------------------------------------------------------------------

    def delay(self, seconds: float) -> None:
        """Every chunk in either direction waits ``seconds`` before it is passed on."""
        self.latency = seconds

    def stall(self) -> None:
        """Hold every byte (connections stay open) until :meth:`heal`."""

        def apply() -> None:
            self.mode = "stall"
            self._flowing.clear()

        self._call(apply)

    def cut(self) -> None:
        """Reset every connection; refuse new ones (with a reset) until :meth:`heal`."""

        def apply() -> None:
            self.mode = "cut"
            self._flowing.set()
            for writer in list(self._writers):
                _reset(writer)
            self._writers.clear()

        self._call(apply)

    def heal(self) -> None:
        def apply() -> None:
            self.mode = "pass"
            self.latency = 0.0
            self._flowing.set()

        self._call(apply)

    def close(self) -> None:
        def apply() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._writers):
                _reset(writer)
            self._loop.stop()

        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(apply)
            self._thread.join(5)

    # -- forwarding ---------------------------------------------------------------------------

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self.mode == "cut":
            _reset(client_w)
            return
        try:
            upstream_r, upstream_w = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            _reset(client_w)
            return
        self.connections += 1
        self._writers.update((client_w, upstream_w))
        try:
            await asyncio.gather(self._pump(client_r, upstream_w), self._pump(upstream_r, client_w))
        finally:
            for writer in (client_w, upstream_w):
                self._writers.discard(writer)
                with contextlib.suppress(Exception):
                    writer.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                if self.latency:
                    await asyncio.sleep(self.latency)
                await self._flowing.wait()
                if self.mode == "cut" or writer.is_closing():
                    break
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(Exception):
                if writer.can_write_eof():
                    writer.write_eof()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a dropped link or a firewall reject looks."""
    sock: socket.socket | None = writer.get_extra_info("socket")
    with contextlib.suppress(OSError):
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(Exception):
        writer.transport.abort()

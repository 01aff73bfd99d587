"""The built-in ``tickwork_http`` actor: one HTTP request per attempt, async, on a shared pool.

The method is ``parameters.method``, else POST (with an empty body unless ``body`` or ``json``
gives one), as the seed job against httpbin's ``/post`` expects. Redirects are not followed.
Success is a 2xx. The output is the response body as text, cut to ``output_max_bytes``; the
status code is recorded apart (``job_runs.http_status``). A non-2xx, a network error or a
timeout fails the attempt with the reason (an expected failure: no traceback is stored).

Only http and https; the deny list is checked again at execution time against every address the
host resolves to, and the request is then sent to the checked address (so a DNS answer cannot
change in between).

Bounded by design: the body is streamed and reading stops at ``output_max_bytes`` (decoded:
gzip and deflate are inflated at most that far, so a compression bomb costs no memory), and the
whole attempt (connect, send, every read) has one deadline, the job's ``timeoutSeconds`` or
``TICKWORK_HTTP_TIMEOUT_SECONDS`` (a server trickling a byte at a time cannot hold it forever).
"""

from __future__ import annotations

import asyncio
import codecs
import socket
import zlib
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import httpx

from tickwork.config import Settings
from tickwork.errors import ValidationError
from tickwork.middleware.attempt import AttemptTimeout, JobFailed, truncate_utf8
from tickwork.spec import check_denied_host, request_host, resolver_address, validate_http_url

USER_AGENT = "tickwork-http/0.1"
#: The method when ``parameters`` names none.
DEFAULT_METHOD = "POST"
#: The encodings :class:`BoundedDecoder` inflates (asked for unless the job sets Accept-Encoding).
ACCEPT_ENCODING = "gzip, deflate"


class HttpOutcome(NamedTuple):
    """A 2xx response: its status code and its body as text (cut to the output limit)."""

    status: int
    output: str


_clients: dict[int, httpx.AsyncClient] = {}


def _client(settings: Settings) -> httpx.AsyncClient:
    """One pooled client per event loop (Dramatiq runs one loop per worker process)."""
    loop = asyncio.get_running_loop()
    client = _clients.get(id(loop))
    if client is None or client.is_closed:
        limits = httpx.Limits(
            max_connections=settings.http_max_connections,
            max_keepalive_connections=settings.http_max_connections,
        )
        client = httpx.AsyncClient(limits=limits, follow_redirects=False, trust_env=False)
        _clients[id(loop)] = client
    return client


async def close_clients() -> None:
    for client in list(_clients.values()):
        await client.aclose()
    _clients.clear()


async def _resolve_checked(host: str, port: int, deny_networks: list[str]) -> str:
    """Resolve ``host`` and return an address to connect to; any denied address fails the attempt."""
    literal = resolver_address(host)  # the same reading of 0x7f.1 or 2130706433 as the definition's
    if literal is not None:
        addresses = [str(literal)]
    else:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise JobFailed(f"cannot resolve {host}: {exc.strerror or exc}") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for address in addresses:
        try:
            check_denied_host(address, deny_networks, field="url")
        except ValidationError as exc:
            raise JobFailed(f"denied: {host} resolves to {exc.reason}") from None
    return addresses[0]


async def http_request(
    settings: Settings,
    url: str,
    *,
    method: str | None = None,
    headers: dict[str, str] | None = None,
    query: dict[str, Any] | None = None,
    body: str | None = None,
    json: Any = None,
    timeout: float | None = None,
) -> HttpOutcome:
    """Send one request; return the status and body of a 2xx, or raise :class:`JobFailed`.

    ``timeout`` (default ``settings.http_timeout_seconds``) is the deadline of the whole attempt;
    passing it raises :class:`AttemptTimeout`. ``query`` is merged into the URL's own query.
    """
    try:
        validate_http_url(url, settings.http_deny_networks, field="url")
        parts = urlsplit(url)
        host = request_host(parts.hostname or "", field="url")
    except ValidationError as exc:
        raise JobFailed(f"denied: {exc.reason}" if "denied" in exc.reason else exc.reason) from None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    deadline = timeout if timeout is not None else settings.http_timeout_seconds
    verb = (method or DEFAULT_METHOD).upper()
    request_headers = {"User-Agent": USER_AGENT, "Accept-Encoding": ACCEPT_ENCODING, **(headers or {})}
    authority = f"[{host}]" if ":" in host else host  # IDNA-encoded: header values are ASCII
    request_headers.setdefault("Host", f"{authority}:{parts.port}" if parts.port else authority)
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    client = _client(settings)
    try:
        async with asyncio.timeout(deadline) as scope:
            address = await _resolve_checked(host, port, settings.http_deny_networks)
            pinned = httpx.URL(url).copy_with(host=address)
            if query:
                pinned = pinned.copy_merge_params(query)
            request = client.build_request(
                verb,
                pinned,
                headers=request_headers,
                content=body.encode() if body is not None else None,
                json=json if body is None else None,
                timeout=deadline,
                extensions=extensions,
            )
            response = await client.send(request, stream=True)
            try:
                text = await read_limited(response, settings.output_max_bytes)
            finally:
                await response.aclose()
    except TimeoutError:
        if scope.expired():
            raise AttemptTimeout(deadline) from None
        raise JobFailed(f"timeout: connecting to {host}") from None
    except httpx.TimeoutException as exc:
        raise JobFailed(f"timeout: {type(exc).__name__} from {host}") from None
    except httpx.ConnectError as exc:
        raise JobFailed(f"connection failed: {exc or type(exc).__name__}") from None
    except httpx.HTTPError as exc:
        raise JobFailed(f"network error: {type(exc).__name__}: {exc}") from None
    output = truncate_utf8(text, settings.output_max_bytes)
    if not 200 <= response.status_code < 300:
        raise JobFailed(
            f"HTTP {response.status_code} {response.reason_phrase}".strip(),
            output,
            http_status=response.status_code,
        )
    return HttpOutcome(response.status_code, output)


async def read_limited(response: httpx.Response, max_bytes: int) -> str:
    """The response body as text, reading (and inflating) no more than ``max_bytes`` of it.

    The rest is never read: closing the response drops the connection instead of draining it.
    """
    decoder = BoundedDecoder(response.headers.get("content-encoding", ""))
    data = bytearray()
    async for chunk in response.aiter_raw():
        data += decoder.decode(chunk, max_bytes - len(data))
        if len(data) >= max_bytes:
            break
    text_decoder = codecs.getincrementaldecoder(_charset(response))(errors="replace")
    return text_decoder.decode(bytes(data), final=False)  # a character cut at the limit is dropped


def _charset(response: httpx.Response) -> str:
    try:
        return codecs.lookup(response.charset_encoding or "utf-8").name
    except LookupError:
        return "utf-8"


class BoundedDecoder:
    """Undo ``Content-Encoding`` (gzip, deflate, identity) producing at most what is asked for.

    zlib's ``max_length`` bounds each call's output, so a few KiB of compressed zeros inflate
    only to the limit, never to their full size. Other encodings (br, zstd: not asked for) pass
    through as they are.
    """

    def __init__(self, content_encoding: str) -> None:
        codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip()]
        codings = [c for c in codings if c != "identity"]
        self.wbits: int | None = None
        if codings in (["gzip"], ["x-gzip"]):
            self.wbits = zlib.MAX_WBITS | 16
        elif codings == ["deflate"]:
            self.wbits = zlib.MAX_WBITS
        self._zlib = zlib.decompressobj(self.wbits) if self.wbits is not None else None
        self._first = True

    def decode(self, chunk: bytes, limit: int) -> bytes:
        if limit <= 0:
            return b""
        if self._zlib is None:
            return chunk[:limit]
        try:
            return self._inflate(chunk, limit)
        except zlib.error as exc:
            raise JobFailed(f"cannot decode the response body: {exc}") from None

    def _inflate(self, chunk: bytes, limit: int) -> bytes:
        assert self._zlib is not None and self.wbits is not None
        if self._first and self.wbits == zlib.MAX_WBITS:
            self._first = False
            try:  # "deflate" is zlib-wrapped by the RFC, raw in some servers: try both
                return self._zlib.decompress(chunk, limit)
            except zlib.error:
                self.wbits = -zlib.MAX_WBITS
                self._zlib = zlib.decompressobj(self.wbits)
        self._first = False
        out = self._zlib.decompress(chunk, limit)
        while len(out) < limit and self._zlib.eof and self._zlib.unused_data:  # concatenated gzip members
            rest = self._zlib.unused_data
            self._zlib = zlib.decompressobj(self.wbits)
            out += self._zlib.decompress(rest, limit - len(out))
        return out

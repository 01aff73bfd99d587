"""The built-in ``tickwork_http`` actor: one HTTP request per attempt, async, on a shared pool.

The method is ``parameters.method``, else POST (with an empty body unless ``body`` or ``json``
gives one), as the seed job against httpbin's ``/post`` expects. Redirects are not followed.
Success is a 2xx. The output is the response body as text, cut to ``output_max_bytes``; the
status code is recorded apart (``job_runs.http_status``). A non-2xx, a network error or a
timeout fails the attempt with the reason (an expected failure: no traceback is stored).

Only http and https; the deny list is checked again at execution time against every address the
host resolves to, and the request is then sent to the checked address (so a DNS answer cannot
change in between).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import httpx

from tickwork.config import Settings
from tickwork.errors import ValidationError
from tickwork.middleware.attempt import JobFailed, truncate_utf8
from tickwork.spec import check_denied_host, validate_http_url

#: Per-request limit when the job has no timeout of its own (seconds).
DEFAULT_HTTP_TIMEOUT_SECONDS = 300.0
USER_AGENT = "tickwork-http/0.1"
#: The method when ``parameters`` names none.
DEFAULT_METHOD = "POST"


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
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
        addresses = [str(literal)]
    except ValueError:
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
    """Send one request; return the status and body of a 2xx, or raise :class:`JobFailed`."""
    try:
        validate_http_url(url, settings.http_deny_networks, field="url")
    except ValidationError as exc:
        raise JobFailed(f"denied: {exc.reason}" if "denied" in exc.reason else exc.reason) from None
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    address = await _resolve_checked(host, port, settings.http_deny_networks)
    verb = (method or DEFAULT_METHOD).upper()
    request_headers = {"User-Agent": USER_AGENT, **(headers or {})}
    pinned = httpx.URL(url).copy_with(host=address)
    request_headers.setdefault("Host", parts.netloc.rsplit("@", 1)[-1])
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    client = _client(settings)
    try:
        response = await client.request(
            verb,
            pinned,
            headers=request_headers,
            params=query or None,
            content=body.encode() if body is not None else None,
            json=json if body is None else None,
            timeout=timeout if timeout is not None else DEFAULT_HTTP_TIMEOUT_SECONDS,
            extensions=extensions,
        )
    except httpx.TimeoutException as exc:
        raise JobFailed(f"timeout: {type(exc).__name__} from {host}") from None
    except httpx.ConnectError as exc:
        raise JobFailed(f"connection failed: {exc or type(exc).__name__}") from None
    except httpx.HTTPError as exc:
        raise JobFailed(f"network error: {type(exc).__name__}: {exc}") from None
    output = truncate_utf8(response.text, settings.output_max_bytes)
    if not 200 <= response.status_code < 300:
        raise JobFailed(
            f"HTTP {response.status_code} {response.reason_phrase}".strip(),
            output,
            http_status=response.status_code,
        )
    return HttpOutcome(response.status_code, output)

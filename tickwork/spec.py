"""The job definition as users write it (REST JSON, CLI flags, ``@job`` arguments), validated.

One pydantic model serves the API body (camelCase aliases), the CLI and the decorator, so
every entry point rejects the same inputs with the same field names and reasons.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
import socket
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

import idna
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from tickwork.errors import ValidationError
from tickwork.schedule.cron import CronSchedule, parse_run_at, parse_timezone
from tickwork.vocabulary import HandlerType, MisfirePolicy, OverlapPolicy

# Used with fullmatch: ``$`` alone would also match before a trailing newline.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,199}")
QUEUE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]{0,63}")
PYTHON_HANDLER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.:\-]{0,199}")
MAX_PARAMETERS_BYTES = 64 * 1024
#: Nesting levels of a JSON field (its own object or array is level 1). MariaDB's JSON check
#: refuses documents 32 deep, and deeper ones would fail to serialize back in the API.
MAX_JSON_DEPTH = 16
NON_FINITE = "NaN and Infinity are not valid JSON"
#: Unicode category Cc: C0 controls (NUL, tab, newline, ...), DEL and C1 controls.
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: Halves of a UTF-16 pair on their own: JSON's \ud800 escapes decode to them; not encodable.
SURROGATE_RE = re.compile(r"[\ud800-\udfff]")
#: A tag: short, and safe in a URL and in a ``LIKE`` pattern over the stored JSON list.
TAG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}")
MAX_TAGS = 20
#: The most attempts of one job RUNNING at once that ``maxConcurrency`` may name.
MAX_CONCURRENCY = 10_000
HTTP_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}
#: An HTTP header name (RFC 9110 ``token``).
HEADER_NAME_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}")
#: A header value: visible ASCII, spaces and tabs (no CR, LF or NUL: they would split the request).
HEADER_VALUE_RE = re.compile(r"[\t\x20-\x7e]{0,8192}")
#: A host name as the resolver reads it: letters, digits, ``-``, ``_`` and dots (IDNA-encoded).
HOST_NAME_RE = re.compile(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*\.?")
#: What ``inet_aton`` may read as an IPv4 address (``0x7f.1``, ``2130706433``, ``0177.0.0.1``).
INET_ATON_RE = re.compile(r"[0-9A-Fa-fXx]+(\.[0-9A-Fa-fXx]+){0,3}")


def _instant_text(value: Any) -> Any:
    """An instant is written as ISO 8601 text: a number (epoch seconds?) is refused, not guessed."""
    if isinstance(value, int | float):
        raise ValueError("give an ISO 8601 date-time string (e.g. 2030-01-01T00:00:00Z), not a number")
    return value


#: The JSON is strict: no coercion of ``"3"`` to 3, ``"yes"`` to true, 10.0 to 10 or a number to
#: an instant. A float field takes a JSON integer (a JSON number is a number).
Instant = Annotated[datetime, BeforeValidator(_instant_text)]


class JobSpec(BaseModel):
    """A job definition. Exactly one of ``cronExpression`` / ``runAt`` or neither (on demand)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        str_strip_whitespace=True,
        allow_inf_nan=False,  # NaN/Infinity numbers: "Input should be a finite number"
    )

    name: str = Field(min_length=1, max_length=200)
    cron_expression: str | None = Field(default=None, max_length=200)
    run_at: Instant | None = None
    timezone: str = "UTC"
    handler_type: HandlerType
    handler_data: str = Field(min_length=1, max_length=2048)
    parameters: dict[str, Any] | None = None
    retry_count: StrictInt = Field(default=0, ge=0, le=100)
    retry_backoff_seconds: StrictInt = Field(default=10, ge=0, le=86400)
    max_backoff_seconds: StrictInt = Field(default=3600, ge=0, le=7 * 86400)
    timeout_seconds: StrictFloat | None = Field(default=None, gt=0, le=86400)
    queue: str = "default"
    misfire_policy: MisfirePolicy = MisfirePolicy.FIRE_ONCE
    misfire_grace_seconds: StrictFloat | None = Field(default=None, ge=0, le=7 * 86400)
    overlap_policy: OverlapPolicy = OverlapPolicy.ALLOW
    enabled: StrictBool = True
    tags: list[str] = Field(default_factory=list, max_length=MAX_TAGS)
    max_concurrency: StrictInt | None = Field(default=None, ge=1, le=MAX_CONCURRENCY)
    #: Alerts (issue 13): a fire not SUCCESS this long after its scheduled time is late (null: off).
    late_after_seconds: StrictInt | None = Field(default=None, ge=1, le=30 * 86400)
    #: Pause the job after this many consecutive DEAD runs (null: off).
    pause_after_failures: StrictInt | None = Field(default=None, ge=1, le=10_000)
    #: Where this job's notifications are POSTed, besides TICKWORK_NOTIFY_URL (null: only there).
    notify_url: str | None = Field(default=None, max_length=2048)

    # Defined first so it runs before the fields' own checks (after whitespace is stripped).
    @field_validator("name", "cron_expression", "timezone", "handler_data", "queue", "notify_url")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        if value is not None:
            check_text(value)
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_RE.fullmatch(value):
            raise ValueError("use letters, digits and _ . : - (starting with a letter or digit)")
        return value

    @field_validator("queue")
    @classmethod
    def _queue(cls, value: str) -> str:
        if not QUEUE_RE.fullmatch(value):
            raise ValueError("use letters, digits, _ and - (starting with a letter or _), at most 64")
        return value

    @field_validator("tags", mode="before")
    @classmethod
    def _null_tags(cls, value: Any) -> Any:
        return [] if value is None else value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        return check_tags(value, "tags")

    @field_validator("cron_expression")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        CronSchedule(value)  # raises ScheduleError (a ValueError) with the field's reason
        return value

    @field_validator("notify_url")
    @classmethod
    def _notify_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        validate_http_url(value, field="notifyUrl")  # the deny list is checked with the settings
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        parse_timezone(value)
        return value

    @field_validator("run_at")
    @classmethod
    def _run_at(cls, value: datetime | None) -> datetime | None:
        try:
            return None if value is None else parse_run_at(value)
        except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 has no UTC instant
            raise ValidationError("runAt", "outside the range of representable UTC instants") from None

    @field_validator("parameters")
    @classmethod
    def _parameters(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        check_json_value(value, "parameters")
        if len(json.dumps(value, allow_nan=False)) > MAX_PARAMETERS_BYTES:
            raise ValueError(f"larger than {MAX_PARAMETERS_BYTES} bytes as JSON")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> JobSpec:
        if self.cron_expression and self.run_at is not None:
            raise ValidationError("runAt", "give either cronExpression or runAt, not both")
        if self.max_backoff_seconds < self.retry_backoff_seconds:
            # Refused, not adjusted: it would cap every retry below the backoff asked for.
            raise ValidationError(
                "maxBackoffSeconds",
                f"must be at least retryBackoffSeconds ({self.retry_backoff_seconds})",
            )
        if self.handler_type == HandlerType.HTTP:
            validate_http_url(self.handler_data)
            validate_http_parameters(self.parameters or {})
        elif not PYTHON_HANDLER_RE.fullmatch(self.handler_data):
            raise ValueError("handlerData: must name a registered @job function")
        return self

    def to_row(self) -> dict[str, Any]:
        """Column values for ``jobs`` (snake_case)."""
        data = self.model_dump(by_alias=False)
        data["handler_type"] = self.handler_type.value
        data["misfire_policy"] = self.misfire_policy.value
        data["overlap_policy"] = self.overlap_policy.value
        return data


def check_tags(tags: list[str], field: str) -> list[str]:
    """Each tag matches :data:`TAG_RE`; duplicates are dropped (the first one's place kept)."""
    for index, tag in enumerate(tags):
        if not TAG_RE.fullmatch(tag):
            raise ValidationError(
                f"{field}.{index}",
                "a tag is 1-64 letters, digits and _ . : - (starting with a letter or digit)",
            )
    return list(dict.fromkeys(tags))


def check_text(value: str) -> None:
    """Refuse control characters (NUL, newlines, escapes) and lone surrogates in a text field."""
    found = CONTROL_RE.search(value)
    if found:
        raise ValueError(f"must not contain control characters (found U+{ord(found.group()):04X})")
    found = SURROGATE_RE.search(value)
    if found:
        raise ValueError(f"must not contain a lone surrogate (found U+{ord(found.group()):04X})")


def check_json_value(value: Any, field: str, *, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Refuse what is not storable as JSON everywhere: NaN and Infinity (Python's ``json``
    reads them, JSON and the database do not), lone surrogates in strings, and nesting
    deeper than ``max_depth``. Raises :class:`ValidationError` naming the element
    (``parameters.json.a.0``). Iterative, so a deep document cannot exhaust the stack."""
    stack: list[tuple[Any, str, int]] = [(value, field, 1)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise ValidationError(path, NON_FINITE)
        if isinstance(item, str):
            _check_json_string(item, path)
        elif isinstance(item, dict | list):
            if depth > max_depth:
                raise ValidationError(path, f"nested deeper than {max_depth} levels")
            if isinstance(item, dict):
                for key, child in item.items():
                    child_path = f"{path}.{escape_surrogates(str(key))}"
                    _check_json_string(str(key), child_path)
                    stack.append((child, child_path, depth + 1))
            else:
                stack.extend((child, f"{path}.{index}", depth + 1) for index, child in enumerate(item))


def escape_surrogates(text: str) -> str:
    """``text`` with lone surrogates written as ``\\udc00``: a field name that can be reported."""
    return SURROGATE_RE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _check_json_string(text: str, path: str) -> None:
    if SURROGATE_RE.search(text):
        raise ValidationError(path, "a lone surrogate is not valid Unicode text")


def validate_http_url(url: str, deny_networks: list[str] | None = None, field: str = "handlerData") -> None:
    """An absolute http(s) URL with a valid host (:func:`request_host`); an address the host
    names (however spelled) must not be in ``deny_networks``."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValidationError(field, f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValidationError(field, "must be an http:// or https:// URL")
    if not parts.hostname:
        raise ValidationError(field, "URL has no host")
    if port == 0:
        raise ValidationError(field, "URL port must be 1-65535")
    host = request_host(parts.hostname, field)
    if deny_networks:
        check_denied_host(host, deny_networks, field)


def request_host(hostname: str, field: str = "handlerData") -> str:
    """The host of a URL as it is resolved and sent: an IP literal, or an ASCII name (non-ASCII
    names IDNA-encoded, as httpx does). Refuses what a resolver would read differently from a
    reader: spaces, percent-encoding, characters outside host names, invalid IDNA (fullwidth
    digits, which Python's resolver would map to ASCII ones)."""
    if hostname.startswith("[") or ":" in hostname:  # an IPv6 literal
        try:
            ipaddress.IPv6Address(hostname.strip("[]"))
        except ValueError:
            raise ValidationError(field, f"host {hostname!r} is not a valid IPv6 address") from None
        return hostname.strip("[]")
    host = hostname
    if not host.isascii():
        try:
            host = idna.encode(host.lower(), uts46=False).decode("ascii")
        except (idna.IDNAError, UnicodeError) as exc:
            raise ValidationError(
                field, f"host {escape_surrogates(hostname)!r} is not a valid IDNA name: {exc}"
            ) from None
    if not HOST_NAME_RE.fullmatch(host) or len(host) > 253:
        raise ValidationError(
            field,
            f"host {escape_surrogates(hostname)!r} must be letters, digits, - _ and dots (no spaces or %)",
        )
    return host


def resolver_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address ``host`` names without a DNS lookup, read the way the system resolver reads
    it: dotted quads, but also ``inet_aton``'s other forms (``2130706433``, ``0x7f.1``,
    ``0177.0.0.1``, ``127.1``) and a trailing dot. None for a name that needs DNS."""
    name = host.strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        pass
    name = name.removesuffix(".")
    if INET_ATON_RE.fullmatch(name):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(name))
        except OSError:
            return None
    return None


def _address_forms(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list[Any]:
    """The address and any IPv4 address it carries (``::ffff:a.b.c.d``, 6to4, NAT64, ``::a.b.c.d``):
    a connection to those reaches the IPv4 host, so the IPv4 deny list must see it."""
    forms: list[Any] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        embedded = [address.ipv4_mapped, address.sixtofour]
        if address.teredo is not None:
            embedded.append(address.teredo[1])
        packed = int(address)
        if address in _NAT64 or (packed >> 32 == 0 and packed > 1):  # 64:ff9b::/96, ::a.b.c.d
            embedded.append(ipaddress.IPv4Address(packed & 0xFFFFFFFF))
        forms.extend(a for a in embedded if a is not None)
    return forms


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def check_denied_host(host: str, deny_networks: list[str], field: str = "handlerData") -> None:
    """Reject a host that names an address inside a denied network (metadata endpoints and such),
    in any spelling the resolver accepts (:func:`resolver_address`)."""
    address = resolver_address(host)
    if address is None:
        return
    for form in _address_forms(address):
        for net in deny_networks:
            network = ipaddress.ip_network(net, strict=False)
            if form.version == network.version and form in network:
                raise ValidationError(field, f"address {address} is in denied network {net}")


def validate_http_parameters(params: dict[str, Any], field: str = "parameters") -> None:
    """``method``, ``headers``, ``query``, ``body`` are what the http handler understands."""
    unknown = set(params) - {"method", "headers", "query", "body", "json"}
    if unknown:
        raise ValidationError(field, f"unknown http parameter(s): {', '.join(sorted(unknown))}")
    method = params.get("method")
    if method is not None and (not isinstance(method, str) or method.upper() not in HTTP_METHODS):
        raise ValidationError(f"{field}.method", f"must be one of {', '.join(sorted(HTTP_METHODS))}")
    for key in ("headers", "query"):
        value = params.get(key)
        if value is not None and (not isinstance(value, dict) or not all(isinstance(k, str) for k in value)):
            raise ValidationError(f"{field}.{key}", "must be an object with string keys")
    for name, header in (params.get("headers") or {}).items():
        where = f"{field}.headers.{escape_surrogates(name)}"
        if not HEADER_NAME_RE.fullmatch(name):
            raise ValidationError(where, "a header name is letters, digits and !#$%&'*+-.^_`|~")
        if not isinstance(header, str):
            raise ValidationError(where, "a header value must be a string")
        if not HEADER_VALUE_RE.fullmatch(header):
            raise ValidationError(
                where, "a header value is printable ASCII of at most 8192 characters (no CR or LF)"
            )
    for name, item in (params.get("query") or {}).items():
        values = item if isinstance(item, list) else [item]
        if not all(v is None or isinstance(v, str | int | float) for v in values):
            raise ValidationError(
                f"{field}.query.{escape_surrogates(name)}",
                "a query value is a string, number, boolean or null, or a list of them",
            )
    body = params.get("body")
    if body is not None and not isinstance(body, str):
        raise ValidationError(f"{field}.body", "must be a string (use 'json' for a JSON body)")

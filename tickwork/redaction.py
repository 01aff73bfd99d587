"""The one redaction point: credentials in URLs, headers and http parameters are masked before
they reach a log line or a ``viewer`` token's reader.

What counts as a credential:

* the userinfo of a URL (``http://user:pass@host/``);
* the value of a header, query parameter or JSON key whose name looks like a credential
  (:func:`is_sensitive_name`: ``Authorization``, ``Cookie``, ``X-Api-Key``, ``apikey``,
  ``access_token``, ``client_secret``, ``password``, ...);
* what follows ``Bearer`` or ``Basic`` in free text.

Values are replaced with :data:`MASK`; names stay, so a reader still sees which header was sent.
A ``body`` string is opaque and kept (the docs say so); a ``json`` body is masked by key name.
Imports nothing from tickwork: every layer may use it.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

MASK = "***"

#: Header names that always carry credentials, whatever :data:`SENSITIVE_NAME_RE` says.
SENSITIVE_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
#: A name "looks like" a credential when it contains one of these words.
SENSITIVE_NAME_RE = re.compile(
    r"(?i)(auth|cookie|token|secret|passw|passwd|pwd|api[-_]?key|apikey|access[-_]?key|private[-_]?key"
    r"|session|signature|credential|jwt|^key$|[-_]key$|^sig$)"
)

_USERINFO_RE = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^\s/?#@'\"<>]+@")
_QUERY_PAIR_RE = re.compile(r"([?&;])([^\s=&;#'\"<>]+)=([^\s&;#'\"<>]*)")
# 'name': 'value' and "name": "value" (Python reprs and JSON), and name=value in kwargs reprs.
_QUOTED_PAIR_RE = re.compile(r"""(['"])([^'"\n]{1,200})\1(\s*:\s*)(['"])((?:\\.|(?!\4).)*)\4""")
_BARE_PAIR_RE = re.compile(
    r"""(['"])([^'"\n]{1,200})\1(\s*:\s*)(-?[0-9][0-9.eE+\-]*|True|False|true|false)"""
)
# name=value outside a query string (a Python job's kwargs in a message repr: password='x').
_KEYWORD_RE = re.compile(
    r"""(?<![?&;\w\-])([A-Za-z_][\w\-]{0,100})=('(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*"|[^\s,)&;'"]+)"""
)
# 8+ characters: "Bearer eyJ..." and "Basic dXNlcjpw..." are masked, "bearer token" is not.
_SCHEME_CREDENTIAL_RE = re.compile(r"(?i)\b(bearer|basic|digest)(\s+)[A-Za-z0-9._~+/\-]{8,}=*")


def is_sensitive_name(name: str) -> bool:
    """True for a header, query parameter or JSON key that looks like it holds a credential."""
    lowered = name.strip().lower()
    return lowered in SENSITIVE_HEADERS or bool(SENSITIVE_NAME_RE.search(lowered))


def redact_url(url: str) -> str:
    """``url`` without its userinfo and with the values of credential-like query parameters masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"
    query = "&".join(_redact_query_pair(pair) for pair in parts.query.split("&")) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _redact_query_pair(pair: str) -> str:
    name, equals, _value = pair.partition("=")
    return f"{name}={MASK}" if equals and is_sensitive_name(unquote(name)) else pair


def redact_mapping(values: dict[str, Any]) -> dict[str, Any]:
    """A copy of a header or query mapping with the values of credential-like names masked."""
    return {key: (MASK if is_sensitive_name(str(key)) else value) for key, value in values.items()}


def redact_json(value: Any) -> Any:
    """A copy of a JSON value with the values of credential-like object keys masked (any depth)."""
    if isinstance(value, dict):
        return {k: (MASK if is_sensitive_name(str(k)) else redact_json(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_json(item) for item in value]
    return value


def redact_http_parameters(parameters: dict[str, Any] | None) -> dict[str, Any] | None:
    """An http job's ``parameters`` with header, query and JSON credentials masked."""
    if parameters is None:
        return None
    masked = dict(parameters)
    for key in ("headers", "query"):
        if isinstance(masked.get(key), dict):
            masked[key] = redact_mapping(masked[key])
    if "json" in masked:
        masked["json"] = redact_json(masked["json"])
    return masked


def redact_text(text: str) -> str:
    """Free text (a log line, a message's repr) with URL userinfo, credential-like query values,
    ``'Authorization': '...'``-style pairs and ``Bearer ...`` values masked."""
    if not text:
        return text
    text = _USERINFO_RE.sub(lambda m: f"{m.group(1)}{MASK}@", text)
    text = _QUERY_PAIR_RE.sub(_query_pair, text)
    text = _QUOTED_PAIR_RE.sub(_quoted_pair, text)
    text = _BARE_PAIR_RE.sub(_bare_pair, text)
    text = _KEYWORD_RE.sub(_keyword, text)
    return _SCHEME_CREDENTIAL_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)


def _query_pair(match: re.Match[str]) -> str:
    separator, name, _value = match.groups()
    return f"{separator}{name}={MASK}" if is_sensitive_name(unquote(name)) else match.group(0)


def _quoted_pair(match: re.Match[str]) -> str:
    quote, name, colon, value_quote, _value = match.groups()
    if not is_sensitive_name(name):
        return match.group(0)
    return f"{quote}{name}{quote}{colon}{value_quote}{MASK}{value_quote}"


def _bare_pair(match: re.Match[str]) -> str:
    quote, name, colon, _value = match.groups()
    return f"{quote}{name}{quote}{colon}{MASK!r}" if is_sensitive_name(name) else match.group(0)


def _keyword(match: re.Match[str]) -> str:
    name, value = match.groups()
    if not is_sensitive_name(name) or value.startswith(MASK):
        return match.group(0)
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{name}={quote}{MASK}{quote}"

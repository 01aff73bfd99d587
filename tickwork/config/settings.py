"""The one ``Settings`` object. No other module reads ``os.environ``."""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import os
import secrets
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import parse_qsl, unquote

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from tickwork.errors import ConfigError, DatabaseMissing

log = logging.getLogger(__name__)

DEFAULT_DATABASE_URL = "sqlite:///tickwork.db"
#: The development secret earlier versions shipped as the default. It is published in the
#: repository, so it is refused as a setting and never signs or verifies a token.
PUBLISHED_AUTH_SECRET = "change-me-tickwork-dev-secret-32b!"
#: Always denied to http jobs (``TICKWORK_HTTP_DENY_NETWORKS`` adds to these, never replaces them):
#: link-local ranges and the cloud metadata endpoints.
ALWAYS_DENIED_NETWORKS = (
    "169.254.0.0/16",  # link-local, including cloud metadata at 169.254.169.254
    "fe80::/10",
    "fd00:ec2::254/128",  # AWS metadata over IPv6
    "100.100.100.200/32",  # Alibaba metadata
)
#: The total time one http attempt may take when its job sets no ``timeoutSeconds``.
DEFAULT_HTTP_TIMEOUT_SECONDS = 300.0


class Settings(BaseSettings):
    """Everything tickwork can be configured with; each field is ``TICKWORK_<NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix="TICKWORK_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    database_url: str = DEFAULT_DATABASE_URL
    #: ``memory://`` (or empty) is Dramatiq's in-process broker; ``amqp://`` selects RabbitMQ.
    broker_url: str = "memory://"
    #: Empty means in-process locking and heartbeats (embedded mode).
    redis_url: str | None = None
    #: Prefix of every queue, Redis key and DLQ name, so a test run never touches a live cluster.
    namespace: str = "tickwork"

    #: Modules to import at start-up so their ``@job`` functions are registered.
    imports: Annotated[list[str], NoDecode] = Field(default_factory=list)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["json", "text"] = "text"

    output_max_bytes: int = Field(default=65536, ge=256, le=16 * 1024 * 1024)
    #: Under load the worker thread leading a group commit waits this long for more claims and
    #: outcomes before it commits them together (fewer, larger transactions); 0 commits at once. MySQL only.
    commit_delay_ms: float = Field(default=1.0, ge=0, le=100)
    max_payload_bytes: int = Field(default=256 * 1024, ge=1024, le=64 * 1024 * 1024)

    #: Signs and verifies API tokens. Empty (the default): required for a shared deployment; the
    #: embedded mode uses ``<database>.secret`` next to its SQLite file, or a random secret for
    #: one process (:func:`resolve_auth_secret`). There is no built-in secret.
    auth_secret: str = ""
    auth_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    token_ttl_seconds: int = Field(default=12 * 3600, ge=60)

    #: Networks http jobs may not reach, added to :data:`ALWAYS_DENIED_NETWORKS`.
    http_deny_networks: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(ALWAYS_DENIED_NETWORKS)
    )
    http_max_connections: int = Field(default=100, ge=1)
    #: Total deadline of an http attempt whose job has no ``timeoutSeconds`` (connect, send, read).
    http_timeout_seconds: float = Field(default=DEFAULT_HTTP_TIMEOUT_SECONDS, gt=0, le=86400)

    #: Alerts (issue 13). Every notification is POSTed here (and to the job's ``notifyUrl``).
    notify_url: str | None = None
    #: Key of the ``X-Tickwork-Signature`` HMAC; empty: notifications are sent unsigned.
    notify_secret: str = ""
    #: First retry of a failed delivery after this long, doubling up to ``notify_max_backoff``.
    notify_backoff_seconds: float = Field(default=10.0, gt=0, le=86400)
    notify_max_backoff_seconds: float = Field(default=3600.0, gt=0, le=86400)
    #: A notification not delivered this long after it was recorded ends FAILED.
    notify_deadline_seconds: float = Field(default=86400.0, gt=0, le=30 * 86400)
    #: Total time one delivery POST may take.
    notify_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    #: How far back the late sweep looks the first time it sees a job (later: from its watermark).
    late_lookback_seconds: float = Field(default=3600.0, gt=0, le=30 * 86400)

    leader_ttl_ms: int = Field(default=1200, ge=500, le=600_000)
    leader_renew_ms: int = Field(default=400, ge=100, le=300_000)
    heartbeat_ttl_seconds: float = Field(default=10.0, gt=0, le=3600)
    heartbeat_interval_seconds: float = Field(default=2.0, gt=0, le=600)
    outbox_grace_seconds: float = Field(default=30.0, gt=0, le=86400)
    misfire_grace_seconds: float = Field(default=60.0, ge=0, le=86400 * 7)
    fire_all_limit: int = Field(default=100, ge=1, le=100_000)
    retention_days: float = Field(default=30.0, gt=0)
    publish_batch_size: int = Field(default=1000, ge=1, le=100_000)
    #: Where traces go (``tickwork[otel]``): empty (none, unless the application set up
    #: OpenTelemetry itself), ``otlp`` (OTEL_EXPORTER_OTLP_* variables) or ``console``.
    traces_exporter: Literal["", "otlp", "console"] = ""
    #: The most fires one backfill may make (``POST /jobs/{id}/backfill``); more is a 422.
    backfill_max_fires: int = Field(default=10_000, ge=1, le=1_000_000)
    #: A backfill's fires become due at this rate, so on-time fires are never queued behind it.
    backfill_fires_per_second: float = Field(default=200.0, gt=0, le=100_000)

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=0, le=65535)
    metrics_port: int = Field(default=0, ge=0, le=65535)

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        if not (value.startswith("sqlite") or value.startswith("mysql")):
            raise ValueError("must be a sqlite:///, mysql+pymysql:// or mysql+mysqldb:// URL")
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        if value in ("", "memory", "memory://", "stub://"):
            return "memory://"
        if not value.startswith(("amqp://", "amqps://")):
            raise ValueError("must be memory:// or an amqp:// URL")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis:// URL or empty")
        return value

    @field_validator("imports", "http_deny_networks", mode="before")
    @classmethod
    def _imports(cls, value: object) -> object:
        if isinstance(value, str):  # comma-separated, or a JSON list
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [v.strip() for v in text.split(",") if v.strip()]
        return value

    @field_validator("http_deny_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for net in value:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError as exc:
                raise ValueError(f"{net!r} is not a network: {exc}") from None
        # The built-in ranges stay whatever the variable says: it adds, it never replaces.
        return list(dict.fromkeys([*ALWAYS_DENIED_NETWORKS, *value]))

    @field_validator("notify_url")
    @classmethod
    def _notify_url(cls, value: str | None) -> str | None:
        """The shape only; the host and the deny list: :func:`tickwork.notify.check_notify_url`
        (the scheduler and the API call it at start)."""
        if not value:
            return None
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(value)
        except ValueError as exc:
            raise ValueError(f"not a valid URL: {exc}") from None
        if parts.scheme not in ("http", "https"):
            raise ValueError("must be an http:// or https:// URL")
        if not parts.hostname:
            raise ValueError("URL has no host")
        return value

    @field_validator("auth_secret")
    @classmethod
    def _secret(cls, value: str) -> str:
        if value == PUBLISHED_AUTH_SECRET:
            raise ValueError("is the development secret published in tickwork's repository; set your own")
        if value and len(value) < 16:
            raise ValueError("must be at least 16 characters")
        return value

    @property
    def embedded_broker(self) -> bool:
        return self.broker_url == "memory://"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def check_consistency(settings: Settings) -> None:
    """Refuse settings that are each valid but wrong together (a lease renewed after it expired)."""
    if settings.leader_renew_ms >= settings.leader_ttl_ms:
        raise ConfigError(
            "TICKWORK_LEADER_RENEW_MS",
            f"must be below TICKWORK_LEADER_TTL_MS ({settings.leader_ttl_ms}): "
            "the leader would lose its lease between renewals",
        )
    if settings.heartbeat_interval_seconds >= settings.heartbeat_ttl_seconds:
        raise ConfigError(
            "TICKWORK_HEARTBEAT_INTERVAL_SECONDS",
            f"must be below TICKWORK_HEARTBEAT_TTL_SECONDS ({settings.heartbeat_ttl_seconds:g}): "
            "live workers would be reaped as lost between beats",
        )
    if settings.notify_max_backoff_seconds < settings.notify_backoff_seconds:
        raise ConfigError(
            "TICKWORK_NOTIFY_MAX_BACKOFF_SECONDS",
            f"must be at least TICKWORK_NOTIFY_BACKOFF_SECONDS ({settings.notify_backoff_seconds:g})",
        )


def check_auth_secret(settings: Settings) -> None:
    """Refuse a shared deployment (MySQL or RabbitMQ) without a secret of its own: every process
    that verifies a token must share it, and nothing else may be able to guess it."""
    shared = not settings.is_sqlite or not settings.embedded_broker
    if shared and not settings.auth_secret:
        raise ConfigError(
            "TICKWORK_AUTH_SECRET",
            "must be set for a shared deployment (a MySQL database or an amqp:// broker), e.g. "
            "TICKWORK_AUTH_SECRET=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')",
        )


def sqlite_file(database_url: str) -> Path | None:
    """The file of a SQLite database URL.

    Plain paths (``sqlite:///x.db``) and URI filenames (``sqlite:///file:/path/x.db?uri=true``,
    ``file:x.db?mode=rwc``) both name a file; an in-memory database (``:memory:``,
    ``file::memory:``, ``mode=memory``) or a non-SQLite URL has none (None).
    """
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    if not url.drivername.startswith("sqlite"):
        return None
    database = url.database or ""
    query = dict(url.query)
    if database.startswith("file:"):
        database, _, inline_query = database.removeprefix("file:").partition("?")
        query.update(parse_qsl(inline_query))
        if database.startswith("//"):  # file://host/path: the host part is empty or localhost
            database = "/" + database[2:].partition("/")[2]
        database = unquote(database)
    if not database or database == ":memory:" or query.get("mode") == "memory":
        return None
    return Path(database)


def sqlite_secret_path(database_url: str) -> Path | None:
    """Where the embedded mode keeps the secret of a SQLite database: ``<file>.secret``."""
    database = sqlite_file(database_url)
    return None if database is None else Path(f"{database}.secret")


def resolve_auth_secret(settings: Settings, *, create: bool = True) -> Settings:
    """The settings with the secret API tokens are signed with.

    A secret of your own is kept. A shared deployment without one is refused
    (:func:`check_auth_secret`). In the embedded mode on a SQLite file the secret is a random one
    kept next to the database in ``<file>.secret`` (mode 0600, made on first use), so
    ``tickwork dev`` and ``tickwork token`` agree and tokens survive a restart; a secret file that
    cannot be read or written is a :class:`ConfigError` (the CLI exits 2 naming the file). An
    in-memory database gets a random secret for this process only.

    ``create=False`` (``tickwork token``) only reads: without the database or its secret file it
    raises :class:`ConfigError` naming the database URL, and writes nothing.
    """
    if settings.auth_secret:
        return settings
    check_auth_secret(settings)
    database = sqlite_file(settings.database_url)
    if database is None:
        if not create:
            raise ConfigError(
                "TICKWORK_AUTH_SECRET",
                f"{settings.database_url} is an in-memory database, it keeps no token secret: "
                "set TICKWORK_AUTH_SECRET",
            )
        log.info("In-memory database: API tokens are signed with a random secret for this process only.")
        return settings.model_copy(update={"auth_secret": secrets.token_urlsafe(32)})
    path = Path(f"{database}.secret")
    if not create and not os.path.lexists(path):  # a dangling link is an unusable file, below
        where = f"{settings.database_url} ({database.resolve()})"
        if not database.exists():
            raise DatabaseMissing(
                f"no tickwork database at {where}: run this where `tickwork dev` runs, or point "
                "TICKWORK_DATABASE_URL at its database"
            )
        raise ConfigError(
            "TICKWORK_AUTH_SECRET",
            f"no token secret next to the database at {where} yet: `tickwork dev` makes it on start",
        )
    try:
        secret = _read_or_create_secret(path)
    except (OSError, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            "TICKWORK_AUTH_SECRET",
            f"cannot use the secret file {path} ({reason}); fix or delete it, or set TICKWORK_AUTH_SECRET",
        ) from None
    if len(secret) < 16 or secret == PUBLISHED_AUTH_SECRET:
        raise ConfigError(
            "TICKWORK_AUTH_SECRET",
            f"the secret file {path} holds no usable secret (16+ characters); delete it",
        )
    return settings.model_copy(update={"auth_secret": secret})


def _read_or_create_secret(path: Path) -> str:
    """The secret in ``path``; a new random one written there first if the file is missing.
    Written under a temporary name and linked into place, so a reader never sees it half-written
    and two processes starting together end up with the same secret."""
    if not path.exists():
        secret = secrets.token_urlsafe(32)
        temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(secret + "\n")
            os.link(temporary, path)  # fails if another process linked its secret first
            return secret
        except FileExistsError:
            pass
        finally:
            temporary.unlink(missing_ok=True)
    return path.read_text(encoding="utf-8").strip()


def load_settings(**overrides: object) -> Settings:
    """Build settings, turning pydantic's error into a :class:`ConfigError` naming the variable."""
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except SettingsError as exc:
        field = str(exc).split('"')[1] if '"' in str(exc) else "settings"
        raise ConfigError(f"TICKWORK_{field.upper()}", "cannot be parsed") from None
    except json.JSONDecodeError as exc:
        raise ConfigError("TICKWORK_SETTINGS", f"invalid JSON list: {exc}") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = str(err["loc"][0]) if err["loc"] else "settings"
        raise ConfigError(f"TICKWORK_{loc.upper()}", err["msg"].removeprefix("Value error, ")) from None
    check_consistency(settings)
    return settings


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()

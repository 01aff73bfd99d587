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

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from tickwork.errors import ConfigError, DatabaseMissing

log = logging.getLogger(__name__)

DEFAULT_DATABASE_URL = "sqlite:///tickwork.db"
#: Published in the repository: fit for one developer's embedded process, never for a shared one.
DEFAULT_AUTH_SECRET = "change-me-tickwork-dev-secret-32b!"
DEFAULT_HTTP_DENY_NETWORKS = (
    "169.254.0.0/16",  # link-local, including cloud metadata at 169.254.169.254
    "fe80::/10",
    "fd00:ec2::254/128",
    "100.100.100.200/32",  # Alibaba metadata
)


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
    max_payload_bytes: int = Field(default=256 * 1024, ge=1024, le=64 * 1024 * 1024)

    #: The default is public: the API and ``tickwork token`` refuse it outside the embedded mode.
    auth_secret: str = DEFAULT_AUTH_SECRET
    auth_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    token_ttl_seconds: int = Field(default=12 * 3600, ge=60)

    http_deny_networks: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_HTTP_DENY_NETWORKS)
    )
    http_max_connections: int = Field(default=100, ge=1)

    leader_ttl_ms: int = Field(default=3000, ge=500, le=600_000)
    leader_renew_ms: int = Field(default=1000, ge=100, le=300_000)
    heartbeat_ttl_seconds: float = Field(default=10.0, gt=0, le=3600)
    heartbeat_interval_seconds: float = Field(default=2.0, gt=0, le=600)
    outbox_grace_seconds: float = Field(default=30.0, gt=0, le=86400)
    misfire_grace_seconds: float = Field(default=60.0, ge=0, le=86400 * 7)
    fire_all_limit: int = Field(default=100, ge=1, le=100_000)
    retention_days: float = Field(default=30.0, gt=0)
    publish_batch_size: int = Field(default=500, ge=1, le=100_000)

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=0, le=65535)
    metrics_port: int = Field(default=0, ge=0, le=65535)

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        if not (value.startswith("sqlite") or value.startswith("mysql")):
            raise ValueError("must be a sqlite:/// or mysql+pymysql:// URL")
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
        return value

    @field_validator("auth_secret")
    @classmethod
    def _secret(cls, value: str) -> str:
        if len(value) < 16:
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


def check_auth_secret(settings: Settings) -> None:
    """Refuse the built-in development secret for a shared deployment (MySQL or RabbitMQ):
    anyone who has read the repository could sign an admin token for it."""
    shared = not settings.is_sqlite or not settings.embedded_broker
    if shared and settings.auth_secret == DEFAULT_AUTH_SECRET:
        raise ConfigError(
            "TICKWORK_AUTH_SECRET",
            "the built-in development secret must not protect a shared deployment "
            "(a MySQL database or an amqp:// broker); set your own, e.g. "
            "TICKWORK_AUTH_SECRET=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')",
        )


def sqlite_file(database_url: str) -> Path | None:
    """The file of a SQLite database URL (None: not SQLite, in memory, or a ``file:`` URI)."""
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    if not url.drivername.startswith("sqlite"):
        return None
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def resolve_auth_secret(settings: Settings, *, create: bool = True) -> Settings:
    """The settings with the secret API tokens are signed with.

    A secret of your own is kept. The built-in one is refused for a shared deployment
    (:func:`check_auth_secret`). In the embedded mode on a SQLite file it is replaced by a random
    secret kept next to the database in ``<file>.secret`` (mode 0600, made on first use), so
    ``tickwork dev`` and ``tickwork token`` agree and tokens survive a restart. If that file
    cannot be written the built-in secret stays (with a warning).

    ``create=False`` (``tickwork token``) only reads: without the database or its secret file it
    raises :class:`ConfigError` naming the database URL, and writes nothing.
    """
    check_auth_secret(settings)
    if settings.auth_secret != DEFAULT_AUTH_SECRET:
        return settings
    database = sqlite_file(settings.database_url)
    if database is None:
        return settings
    path = Path(f"{database}.secret")
    if not create and not path.exists():
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
    except OSError as exc:
        log.warning("cannot use %s (%s): API tokens use the built-in development secret", path, exc)
        return settings
    if len(secret) < 16:
        raise ConfigError("TICKWORK_AUTH_SECRET", f"{path} holds fewer than 16 characters; delete it")
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

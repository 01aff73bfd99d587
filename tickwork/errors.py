"""One exception hierarchy: callers catch :class:`TickworkError`."""

from __future__ import annotations


class TickworkError(Exception):
    """Something went wrong in tickwork."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ValidationError(TickworkError, ValueError):
    """An input is invalid.

    ``field`` names the input (a JSON field, a CLI flag, an environment variable) and
    ``reason`` says what is wrong with it; both reach the user unchanged.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class ScheduleError(ValidationError):
    """A cron expression, time zone or one-time instant is invalid."""


class ConfigError(ValidationError):
    """A setting is invalid."""


class NotFound(TickworkError, LookupError):
    """The job or run does not exist."""


class Conflict(TickworkError):
    """The request conflicts with the current state (a duplicate name, a run not in the DLQ).

    ``field`` names the input that conflicts, when one does (the API answers it beside ``detail``).
    """

    def __init__(self, message: str | None = None, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


class PreconditionFailed(TickworkError):
    """The job changed since it was read (``If-Match`` names an older version): nothing changed.

    ``version`` is the job's current version (the API answers it as the ``ETag``).
    """

    def __init__(self, message: str | None = None, *, version: int | None = None) -> None:
        self.version = version
        super().__init__(message)


class DatabaseMissing(TickworkError):
    """There is no tickwork database at the configured URL (a read-only command creates none)."""


class DatabaseNotMigrated(TickworkError):
    """The database schema is missing or out of date: run `tickwork db upgrade`."""

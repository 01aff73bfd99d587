"""tickwork: a distributed job scheduler for Python.

``from tickwork import job`` gives the decorator that turns a function into a scheduled job.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "job"]


def __getattr__(name: str) -> Any:
    # Lazy: importing tickwork (for settings or the CLI) must not import Dramatiq actors.
    if name == "job":
        from tickwork.actors import job  # type: ignore[attr-defined]

        return job
    raise AttributeError(name)

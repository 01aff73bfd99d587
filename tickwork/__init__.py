"""tickwork: a distributed job scheduler for Python.

``from tickwork import job`` gives the decorator that turns a function into a scheduled job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # type checkers see the decorator's own signature; at run time it is lazy
    from tickwork.actors.decorator import job as job

__version__ = "0.1.0"
__all__ = ["__version__", "job"]


def __getattr__(name: str) -> Any:
    # Lazy: importing tickwork (for settings or the CLI) must not import Dramatiq actors.
    if name == "job":
        from tickwork.actors import job

        return job
    raise AttributeError(name)

"""The REST API (FastAPI): jobs, runs, the dead-letter queue, auth, health and metrics.

``create_app`` is imported lazily so the CLI can use the response models without FastAPI.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from tickwork.api.app import create_app

        return create_app
    raise AttributeError(name)

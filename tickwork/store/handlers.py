"""Which Python handlers exist: a ``@job`` function registers a ``source='decorator'`` job row."""

from __future__ import annotations

from sqlalchemy import Engine, or_, select

from tickwork.store.models import jobs_table


def is_registered_handler(engine: Engine, handler: str) -> bool:
    """True when a ``@job`` function registered ``handler`` (as its actor or its job name)."""
    query = (
        select(jobs_table.c.id)
        .where(
            jobs_table.c.source == "decorator",
            jobs_table.c.handler_type == "python",
            or_(jobs_table.c.handler_data == handler, jobs_table.c.name == handler),
        )
        .limit(1)
    )
    with engine.connect() as conn:
        return conn.scalar(query) is not None

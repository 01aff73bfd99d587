"""Pruning beside the runs': the audit trail (the runs' retention) and spent idempotency keys."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine

from tickwork.store import events, trigger_keys
from tickwork.store.models import utcnow


def prune_operations(engine: Engine, *, runs_cutoff: datetime) -> tuple[int, int]:
    """Delete events older than ``runs_cutoff`` and idempotency keys past their 24 hours."""
    pruned_events = events.prune(engine, older_than=runs_cutoff)
    pruned_keys = trigger_keys.prune(engine, older_than=utcnow() - trigger_keys.WINDOW)
    return pruned_events, pruned_keys

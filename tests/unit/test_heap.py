"""The start-up heap frozen out of the cyclic collector's way (tickwork.heap)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

from tickwork.heap import freeze_startup_heap

pytestmark = pytest.mark.unit


class _Node:
    me: Any = None


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """The test process's heap is thawed again afterwards."""
    gc.unfreeze()
    try:
        yield
    finally:
        gc.unfreeze()


@pytest.mark.usefixtures("unfrozen")
def test_what_exists_at_the_call_is_frozen_and_garbage_is_collected_first() -> None:
    kept = [object() for _ in range(10)] + [[i] for i in range(10)]
    cycle = _Node()
    cycle.me = cycle  # garbage in a reference cycle: collected first, not frozen forever
    gone = weakref.ref(cycle)
    del cycle
    tracked = len(gc.get_objects())
    frozen = freeze_startup_heap()
    assert frozen == gc.get_freeze_count() > tracked // 2
    # What the collector tracked is in the permanent generation now: a full collection walks
    # none of it (only what was made since).
    left = gc.get_objects()
    assert all(not any(o is k for o in left) for k in kept[10:])
    assert gone() is None
    after = [[i] for i in range(5)]  # made later: tracked as usual
    assert any(o is after[0] for o in gc.get_objects())

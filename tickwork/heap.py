"""The scheduler's start-up heap, kept out of the cyclic garbage collector's way.

A scheduler process holds ~100,000 objects once started (its imports, the settings, the
engine, the broker), none of them garbage. Python's full collection walks every one of them
with the GIL held: 56-61 ms on the 2-core VM measured. A leader firing 1,000 jobs a second ran
one every 5-10 s (an instant's messages live through a tick and reach the oldest generation),
62-100 ms each, and one over a fire instant delays that instant's publish by as much.
:func:`freeze_startup_heap` moves what exists after start-up into the collector's permanent
generation (``gc.freeze``, as Instagram does for its Django processes): later full collections
walk only what came after, 1-3.4 ms each (benchmarks/results/gc_freeze_2026-12-05/).
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> int:
    """Collect once, then freeze every object left; returns how many were frozen.

    Call it once, when start-up is done. A frozen object is still freed by reference counting;
    only a reference cycle among frozen objects (none are made garbage by design) would stay.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()

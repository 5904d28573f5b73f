"""A worker's garbage collector: what startup made is frozen, the young generation waits longer.

That the whole heap is collected on a timer is checked on running workers
(tests/integration/test_pipeline.py): it is a Faust timer.
"""

from __future__ import annotations

import gc

import faust

from apps.cli import GC_YOUNG_THRESHOLD, tune_gc


def test_tune_gc_freezes_what_exists_and_raises_the_young_threshold():
    before = gc.get_threshold()
    kept = [[i] for i in range(1000)]  # tracked containers alive at the freeze
    try:
        tune_gc(faust.App("gc-tuning", broker="memory://"))
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *before[1:])
        assert gc.get_freeze_count() >= len(kept)
        # Cyclic garbage made after the freeze is still collected.
        cycle: list = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)

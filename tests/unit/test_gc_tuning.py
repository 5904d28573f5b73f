"""A worker's garbage collector: what startup made is frozen, the young generation waits longer."""

from __future__ import annotations

import gc

from apps.cli import GC_YOUNG_THRESHOLD, tune_gc


def test_tune_gc_freezes_what_exists_and_raises_the_young_threshold():
    before = gc.get_threshold()
    kept = [[i] for i in range(1000)]  # tracked containers alive at the freeze
    try:
        tune_gc()
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

"""``tune_gc``: the collector settings ``oserve serve`` applies once it is up (start-up frozen, a larger young
generation), and 0 leaving Python's own."""

from __future__ import annotations

import gc

from oserve.runtime.config import ServeConfig
from oserve.runtime.loop import tune_gc


def test_tune_gc_freezes_start_up_and_widens_the_young_generation():
    before = gc.get_threshold()
    try:
        tune_gc(0)
        assert gc.get_threshold() == before and gc.get_freeze_count() == 0
        tune_gc(12345)
        assert gc.get_threshold() == (12345, 20, 10)
        assert gc.get_freeze_count() > 1000  # this test process's modules, at least
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_the_serve_config_defaults_to_tuned_and_takes_zero():
    assert ServeConfig().gateway.gc_gen0_threshold == 200000
    assert ServeConfig.model_validate({"gateway": {"gc_gen0_threshold": 0}}).gateway.gc_gen0_threshold == 0

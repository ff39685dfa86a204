"""``oserve-static`` offers the long types isolated to its simulation check: on a slice of the Mooncake +
Azure conversation blend its choice scores at least as well as the best isolated deployment; without long
prompts no isolation is tried (no extra simulation)."""

from __future__ import annotations

import pytest

from factories import long_blend
from oserve.adapt import registry
from oserve.adapt.registry import SimContext, simulate_policy
from oserve.cli.demo_cmd import demo_slo
from oserve.cli.options import grid_option, slo_classes_option
from oserve.planner import Slo
from oserve.planner.isolate import long_types, simulated_best_isolation
from oserve.spec import get_model, parse_cluster
from oserve.trace import load_trace, window


def _context(trace, classes, grid, spec, cluster) -> SimContext:
    return SimContext(
        trace,
        spec,
        cluster,
        None,
        None,
        classes.default.to_dict(),
        lambda _text: None,
        {},
        grid=grid,
        classes=classes,
    )


@pytest.fixture(scope="module")
def setup():
    return get_model("llama-3.1-8b"), parse_cluster("1x8xH100")


def test_oserve_static_is_never_worse_than_isolation_on_the_long_blend(shared_traces, setup) -> None:
    if not (shared_traces / "mooncake_synthetic.jsonl").is_file():
        pytest.skip("mooncake trace not found")
    spec, cluster = setup
    trace = long_blend(shared_traces, 40.0, 2.69)
    classes = slo_classes_option(demo_slo(spec, cluster), spec, cluster)
    grid = grid_option(trace, 6, None, None, classes.prompt_thresholds)
    ctx = _context(trace, classes, grid, spec, cluster)
    assert long_types(grid, 16000)
    _, result = simulate_policy("oserve-static", ctx)
    isolated, _ = simulated_best_isolation(
        trace,
        spec,
        cluster,
        Slo.from_dict(ctx.slo),
        grid=grid,
        long=long_types(grid, 16000),
        scoring=ctx.score,
    )
    assert result.summary["goodput_rps"] >= isolated.result.summary["goodput_rps"] - 1e-9


def test_no_long_prompts_no_isolation(shared_traces, setup, monkeypatch) -> None:
    spec, cluster = setup
    trace = window(load_trace(shared_traces / "azure_conv_2023.csv"), 0.0, 30.0)
    trace = trace.take((trace.prompt_tokens < 16000).nonzero()[0])
    classes = slo_classes_option("auto", spec, cluster)
    grid = grid_option(trace, 6, None, None, classes.prompt_thresholds)
    called = []
    monkeypatch.setattr(registry, "simulated_best_isolation", lambda *a, **k: called.append(1))
    assert registry._isolation_seeds(_context(trace, classes, grid, spec, cluster)) == []
    assert not called

"""``oserve-static``'s verified plan is one of ``oserve``'s start candidates: searched once per context (shared by
both policies), and ``oserve`` never starts worse than it on the prior; told it is best, ``oserve`` starts there,
routed as it was checked."""

from __future__ import annotations

import pytest

from factories import long_blend
from oserve.adapt import registry
from oserve.adapt.registry import SimContext, build_policy
from oserve.cli.demo_cmd import demo_slo
from oserve.cli.options import grid_option, slo_classes_option
from oserve.planner.verify import TIE
from oserve.sim import SimResult, simulate
from oserve.spec import get_model, parse_cluster


@pytest.fixture(scope="module")
def setup(shared_traces):
    if not (shared_traces / "mooncake_synthetic.jsonl").is_file():
        pytest.skip("mooncake trace not found")
    spec, cluster = get_model("llama-3.1-8b"), parse_cluster("1x8xH100")
    trace = long_blend(shared_traces, 130.0, 2.0)
    classes = slo_classes_option(demo_slo(spec, cluster), spec, cluster)
    grid = grid_option(trace, 6, None, None, classes.prompt_thresholds)
    return spec, cluster, trace, classes, grid


def _context(setup, policies) -> SimContext:
    spec, cluster, trace, classes, grid = setup
    return SimContext(
        trace,
        spec,
        cluster,
        None,
        None,
        classes.default.to_dict(),
        lambda _text: None,
        policies,
        grid=grid,
        classes=classes,
    )


def _score(result: SimResult) -> tuple[float, float]:
    return float(result.summary["goodput_rps"]), float(result.summary["e2e_p99"])


def test_oserve_never_starts_worse_than_oserve_static_and_shares_its_search(setup, monkeypatch) -> None:
    spec, cluster, trace, _, _ = setup
    calls = []
    search = registry.simulated_best_plan
    monkeypatch.setattr(registry, "simulated_best_plan", lambda *a, **k: calls.append(1) or search(*a, **k))
    ctx = _context(setup, ("static", "oserve-static", "oserve"))
    planned = build_policy("oserve-static", ctx)
    run = build_policy("oserve", ctx)
    assert len(calls) == 1  # oserve took oserve-static's verified plan from the context, not a second search
    assert registry._plan_seeds(ctx)[0][1] is planned.deployment
    grid = getattr(run.policy, "grid", None)  # None: a P/D pool won, held fixed
    start = ctx.score(
        simulate(trace, run.deployment, spec, cluster, router=run.router, slo=ctx.slo, grid=grid)
    )
    goodput, p99 = _score(start)
    g, q = _score(planned.result)
    # the ranking's rule (``best_index``): within TIE of its goodput or better, and no worse P99 in the tie
    assert goodput >= g * (1 - TIE) - 1e-9
    assert g < goodput * (1 - TIE) or p99 <= q + 1e-9


def test_told_the_plan_is_best_oserve_starts_from_it(setup) -> None:
    ctx = _context(setup, ("oserve",))
    ctx.seeds["isolation"], ctx.seeds["pools"] = [], []
    planned = registry._oserve_static(ctx)
    told = SimResult(
        planned.result.records,
        planned.result.replicas,
        {**planned.result.summary, "goodput_rps": 1e9},
        planned.result.switches,
        planned.result.migrations,
    )
    ctx.cache["oserve-static"] = registry.PlannedRun(planned.deployment, None, told, planned.router)
    run = build_policy("oserve", ctx)
    assert run.policy.start_label == "oserve-static"
    assert run.deployment.replicas == planned.deployment.replicas
    assert run.deployment.weights == planned.deployment.weights
    assert run.router == planned.router  # routed as it was checked


def test_no_plan_seed_with_a_given_deployment(setup) -> None:
    ctx = _context(setup, ("oserve",))
    ctx.deployment = build_policy("vllm", _context(setup, ("vllm",))).deployment
    assert registry._plan_seeds(ctx) == []
    assert "oserve-static" not in ctx.cache  # nothing searched

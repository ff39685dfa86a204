"""``oserve`` starts from the best of OServe's candidates on the prior (its plan, static's deployment, the best
isolated deployment, the P/D pools and hybrid), each simulated once per context; a seeded start runs routed as
it was scored and the controller keeps its routing rules (no re-route opens a long type to the rest part).
``oserve-static``'s verified plan is one of the candidates: searched once per context (shared by both policies);
told it is best, ``oserve`` starts there, routed as it was checked."""

from __future__ import annotations

import numpy as np
import pytest

from factories import long_blend
from oserve.adapt import registry
from oserve.adapt.policy import OracleSource, start_adaptive
from oserve.adapt.registry import SimContext, build_policy
from oserve.cli.demo_cmd import demo_slo
from oserve.cli.options import grid_option, slo_classes_option
from oserve.errors import ConfigError
from oserve.planner import Slo
from oserve.planner.verify import START_TIE, TAIL_GAIN, TAIL_TIE, best_index, lowest_p99_index
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


def _context(setup) -> SimContext:
    spec, cluster, trace, classes, grid = setup
    return SimContext(
        trace,
        spec,
        cluster,
        None,
        None,
        classes.default.to_dict(),
        lambda _text: None,
        grid=grid,
        classes=classes,
    )


def _score(result) -> tuple[float, float]:
    return float(result.summary["goodput_rps"]), float(result.summary["e2e_p99"])


def test_the_start_is_never_worse_than_a_seed_and_seeds_are_simulated_once(setup, monkeypatch) -> None:
    spec, cluster, trace, _, _ = setup
    calls = []
    search = registry.simulated_best_isolation
    monkeypatch.setattr(
        registry, "simulated_best_isolation", lambda *a, **k: calls.append(1) or search(*a, **k)
    )
    ctx = _context(setup)
    build_policy("oserve-static", ctx)
    run = build_policy("oserve", ctx)
    assert len(calls) == 1  # oserve reused oserve-static's isolation search
    seeds = [ctx.cache["static"].result, *(r for *_, r in ctx.seeds["isolation"] + ctx.seeds["pools"])]
    assert ctx.seeds["isolation"] and ctx.seeds["pools"]  # the blend has long types and P/D shapes fit
    # the start, simulated fixed as it is routed, scores as the best seed or better (``best_index``: goodput
    # within TAIL_TIE of the best, and no seed with at least its goodput has a tail better by over TAIL_GAIN)
    grid = getattr(run.policy, "grid", None)  # None: a pool won, held fixed
    start = ctx.score(
        simulate(trace, run.deployment, spec, cluster, router=run.router, slo=ctx.slo, grid=grid)
    )
    goodput, p99 = _score(start)
    best = max(_score(r)[0] for r in seeds)
    assert goodput >= best * (1 - TAIL_TIE) - 1e-9
    for r in seeds:
        g, q = _score(r)
        assert g < goodput or p99 * (1 - TAIL_GAIN) <= q + 1e-9


def test_an_isolated_start_keeps_its_parts(setup) -> None:
    """Told the isolated seed is best, the controller starts there, routed by its weights and router, and no
    decision re-routes a long type onto the rest part (the flow LP would: it does not model the isolation)."""
    spec, cluster, trace, _, _ = setup
    ctx = _context(setup)
    (label, isolated, router, result) = registry._isolation_seeds(ctx)[0]
    # a real split: some type is allowed on only some of the replicas
    names = {r.name for r in isolated.replicas}
    assert any({n for n, w in row.items() if w > 0} != names for row in isolated.weights.values())
    told = type(result)(result.records, result.replicas, {**result.summary, "goodput_rps": 1e9})
    slo = Slo.from_dict(ctx.slo)
    start, policy = start_adaptive(
        trace, spec, cluster, slo, OracleSource(), prior=trace, seeds=[(label, isolated, router, told)]
    )
    assert start.weights == isolated.weights and policy.router == router
    ran = simulate(trace, start, spec, cluster, router=policy.router, policy=policy, slo=ctx.slo)
    assert policy.decisions  # it decided along the way
    assert policy.reroutes == 0 or policy.switches
    if not policy.switches:
        long_types = {t for t, row in isolated.weights.items() if all(n.startswith("long-") for n in row)}
        rec = ran.records
        on_rest = rec[rec["type_name"].isin(long_types) & ~rec["replica"].astype(str).str.startswith("long-")]
        assert long_types and len(on_rest) == 0
        assert np.isin(rec["type_name"].unique(), list(isolated.weights)).all()


def test_a_pool_start_is_held_as_simulated(setup) -> None:
    """The simulator runs P/D pools under a static policy only: told a pool is best, ``oserve`` holds it, with
    the pool's cached simulation as its result (nothing simulated twice)."""
    ctx = _context(setup)
    ctx.seeds["isolation"] = []
    label, pool, router, result = registry._pool_seeds(ctx)[0]
    told = type(result)(result.records, result.replicas, {**result.summary, "goodput_rps": 1e9})
    ctx.seeds["pools"] = [(label, pool, router, told)]
    run, ran = registry.simulate_policy("oserve", ctx)
    assert run.deployment == pool and run.router == router and run.result is told
    assert ran.records["finish_s"].equals(told.records["finish_s"])  # the pool's own simulation, re-scored


def test_oserve_never_starts_worse_than_oserve_static_and_shares_its_search(setup, monkeypatch) -> None:
    spec, cluster, trace, _, _ = setup
    calls = []
    search = registry.simulated_best_plan
    monkeypatch.setattr(registry, "simulated_best_plan", lambda *a, **k: calls.append(1) or search(*a, **k))
    ctx = _context(setup)
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
    # the ranking's rule (``best_index``): within TAIL_TIE of its goodput or better, and if not behind it, a
    # P99 not worse by more than TAIL_GAIN
    assert goodput >= g * (1 - TAIL_TIE) - 1e-9
    assert g < goodput or p99 * (1 - TAIL_GAIN) <= q + 1e-9


def test_told_the_plan_is_best_oserve_starts_from_it(setup) -> None:
    ctx = _context(setup)
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
    ctx = _context(setup)
    ctx.deployment = build_policy("vllm", _context(setup)).deployment
    assert registry._plan_seeds(ctx) == []
    assert "oserve-static" not in ctx.cache  # nothing searched


def test_oserve_starts_alike_alone_and_beside_static(setup) -> None:
    """A user's ``oserve simulate -p oserve`` starts where the headline's ``oserve`` (run after ``static``, in
    the same context) does: static's deployment is a candidate whether or not ``static`` ran first."""
    alone = _context(setup)
    run = build_policy("oserve", alone)
    assert "static" in alone.cache  # searched for the start although static did not run
    beside = _context(setup)
    build_policy("static", beside)
    other = build_policy("oserve", beside)
    assert run.deployment.replicas == other.deployment.replicas
    assert run.deployment.weights == other.deployment.weights
    assert getattr(run.policy, "start_label", None) == getattr(other.policy, "start_label", None)


def test_the_run_keeps_every_candidate_its_start_ranked_as_each_was_scored(setup) -> None:
    """``PlannedRun.candidates``: the plan and every seed, each with its own simulation's score (static's is the
    static policy's run, re-scored per class), and the start is the one ``best_index`` ranks first: what
    ``benchmarks/start_bound.py`` bounds the headline's ratios with."""
    ctx = _context(setup)
    run = build_policy("oserve", ctx)
    labels = [c.label for c in run.candidates]
    seeds = ctx.seeds["isolation"] + ctx.seeds["pools"]
    assert labels[0] == "plan" and "static" in labels
    assert {label for label, *_ in seeds} <= set(labels)
    static = next(c for c in run.candidates if c.label == "static")
    scored = ctx.score(ctx.cache["static"].result).summary
    assert (static.goodput_rps, static.e2e_p99_s) == (scored["goodput_rps"], scored["e2e_p99"])
    assert static.deployment == ctx.cache["static"].deployment.describe()
    first = best_index([(c.goodput_rps, c.e2e_p99_s, c.e2e_mean_s) for c in run.candidates], tie=START_TIE)
    assert run.candidates[first].deployment == run.deployment.describe()
    assert [c.chosen for c in run.candidates] == [i == first for i in range(len(run.candidates))]


def test_lowest_p99_index_keeps_the_anchors_goodput_within_the_tie() -> None:
    scores = [(10.0, 9.0), (10.0, 8.0), (9.9, 5.0), (9.7, 1.0), (12.0, 20.0), (10.5, float("nan"))]
    assert lowest_p99_index(scores, anchor=1) == 2  # 9.7 is more than 2% below the anchor's 10
    assert lowest_p99_index(scores, anchor=1, tie=0.05) == 3
    assert lowest_p99_index(scores, anchor=4) == 4  # nothing else within 2% of 12
    assert lowest_p99_index([(1.0, float("nan"))], anchor=0) == 0  # no P99 anywhere: the anchor


def test_the_p99_first_start_is_the_lowest_p99_within_2_percent_of_statics_goodput(setup) -> None:
    """``oserve-p99`` ranks the same candidates as ``oserve`` (shared per context) by P99 first, anchored on
    static's goodput; an unknown objective is refused in one line."""
    ctx = _context(setup)
    run = build_policy("oserve-p99", ctx)
    floor = next(c for c in run.candidates if c.label == "static").goodput_rps * (1 - START_TIE)
    kept = [c for c in run.candidates if c.goodput_rps >= floor]
    assert run.deployment.describe() == min(kept, key=lambda c: c.e2e_p99_s).deployment
    (chosen,) = [c for c in run.candidates if c.chosen]  # marked under its own objective, once
    assert chosen == min(kept, key=lambda c: c.e2e_p99_s)
    assert [c.label for c in run.candidates] == [c.label for c in build_policy("oserve", ctx).candidates]
    spec, cluster, trace, _, _ = setup
    with pytest.raises(ConfigError, match="start objective must be one of goodput, p99"):
        start_adaptive(trace, spec, cluster, Slo.from_dict(ctx.slo), OracleSource(), objective="tail")

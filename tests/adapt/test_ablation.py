"""The ablation's steps (``adapt.ablation``): ``+hetero`` and ``+routing`` hold one deployment and differ only in
the router, ``+hetero``'s router ignores request types, and each step is simulated under its own router."""

from __future__ import annotations

import numpy as np
import pytest

from factories import make_trace
from oserve.adapt.ablation import (
    BLIND_ROUTER,
    STEPS,
    TYPE_BLIND_ROUTERS,
    ablation_steps,
    is_heterogeneous,
)
from oserve.adapt.registry import ROUND_ROBIN, SimContext, build_policy, simulate_run
from oserve.errors import ConfigError
from oserve.planner import default_slo
from oserve.routing import LoadView, make_router
from oserve.sim import StaticPolicy, simulate
from oserve.spec import get_model, parse_cluster
from oserve.trace import TypeGrid, blend

MODEL = get_model("llama-3.1-8b")


def _context(router: str | None = None) -> SimContext:
    cluster = parse_cluster("1x2xH100+1x2xA100-80GB")
    chat = make_trace(100, rate_rps=5.0, prompt_mean_tokens=400.0, output_mean_tokens=200.0, seed=1)
    docs = make_trace(14, rate_rps=0.7, prompt_mean_tokens=20_000.0, output_mean_tokens=50.0, seed=2)
    trace = blend([chat, docs], name="chat+docs")
    return SimContext(
        trace,
        MODEL,
        cluster,
        None,
        router,
        default_slo(MODEL, cluster).to_dict(),
        lambda _msg: None,
        grid=TypeGrid.for_types(trace, 6),
    )


@pytest.fixture(scope="module")
def built() -> tuple[SimContext, dict]:
    ctx = _context()
    return ctx, ablation_steps(ctx, (BLIND_ROUTER, ROUND_ROBIN))


def _load(queued: list[int], tokens: list[float]) -> LoadView:
    n = len(queued)
    view = LoadView.empty(n, speed=np.array([1.0, 2.0, 1.0]))
    view.queued[:] = queued
    view.outstanding_tokens[:] = tokens
    return view


# type 0 may go to replica 0 only, type 1 to replica 2 only
WEIGHTS = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


@pytest.mark.parametrize("name", TYPE_BLIND_ROUTERS)
def test_a_type_blind_router_sends_every_type_where_it_sends_one(name) -> None:
    for load in (_load([3, 0, 5], [900.0, 100.0, 2000.0]), _load([0, 4, 1], [50.0, 5000.0, 300.0])):
        picks = {t: make_router(name, WEIGHTS).route(t, 500, load) for t in (0, 1)}
        assert picks[0] == picks[1]


def test_the_blind_routers_differ_from_the_plans_routing_on_the_same_probe() -> None:
    load = _load([3, 0, 5], [900.0, 100.0, 2000.0])
    aware = {t: make_router("allowed-least-load", WEIGHTS).route(t, 500, load) for t in (0, 1)}
    assert aware == {0: 0, 1: 2}  # the probe tells a type-aware router apart
    # the fewest requests, though the plan bars type 0 from replica 1
    assert make_router(BLIND_ROUTER, WEIGHTS).route(0, 500, load) == 1


def test_hetero_and_routing_hold_one_deployment_and_differ_only_in_the_router(built) -> None:
    ctx, steps = built
    assert list(steps)[: len(STEPS)] == list(STEPS)
    hetero, routed = steps["+hetero"], steps["+routing"]
    assert hetero.deployment is routed.deployment
    assert hetero.deployment.to_dict() == build_policy("oserve-static", ctx).deployment.to_dict()
    assert hetero.router == BLIND_ROUTER and routed.router not in TYPE_BLIND_ROUTERS
    assert isinstance(hetero.policy, StaticPolicy)
    assert steps["+hetero/round-robin"].deployment is routed.deployment
    assert steps["+hetero/round-robin"].router == ROUND_ROBIN
    assert steps["vllm"].deployment is steps[f"vllm/{BLIND_ROUTER}"].deployment
    assert steps["vllm"].router == ROUND_ROBIN and steps[f"vllm/{BLIND_ROUTER}"].router == BLIND_ROUTER
    assert is_heterogeneous(routed.deployment)  # H100 and A100 replicas


def test_hetero_is_simulated_under_its_own_router_not_routings_result(built) -> None:
    ctx, steps = built
    hetero, routed = steps["+hetero"], steps["+routing"]
    assert hetero.result is None and routed.result is not None
    ran = simulate_run(hetero, ctx).summary
    direct = simulate(ctx.trace, hetero.deployment, MODEL, ctx.cluster, router=BLIND_ROUTER, slo=ctx.slo)
    direct = direct.summary
    assert ran["completed"] == direct["completed"] == len(ctx.trace)
    assert ran["e2e_p99"] == pytest.approx(direct["e2e_p99"])
    assert ran["goodput_rps"] == pytest.approx(direct["goodput_rps"])


@pytest.mark.parametrize("router", ["allowed-least-load", "weighted", "jsq", "llumnix"])
def test_a_router_outside_the_type_blind_ones_is_refused_for_hetero(router) -> None:
    with pytest.raises(ConfigError, match="type-blind routers"):
        ablation_steps(_context(), (router,))


def test_a_fixed_router_is_refused() -> None:
    with pytest.raises(ConfigError, match="chooses each step's router"):
        ablation_steps(_context(router=ROUND_ROBIN))

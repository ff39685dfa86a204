"""Latency mode (least mean unloaded latency at a kept headroom) and the simulation check of candidate plans."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oserve.planner import (
    CapacityModel,
    TypeDemand,
    default_slo,
    demands_from_trace,
    plan,
    simulated_best_plan,
)
from oserve.planner.latency import latency_matrix, min_latency
from oserve.planner.verify import TAIL_GAIN, TAIL_TIE, TIE, best_index
from oserve.sim import simulate
from oserve.spec import get_model, parse_cluster
from oserve.trace import load_trace, scale_rate, window

MODEL, CLUSTER = get_model("llama-3-8b"), parse_cluster("1x8xH100")
SLO = default_slo(MODEL, CLUSTER)
DEMAND = [TypeDemand("short", 4.0, 300.0, 60.0), TypeDemand("long", 1.0, 3000.0, 400.0)]


def test_latency_mode_keeps_the_headroom_and_lowers_latency() -> None:
    fast = plan(MODEL, CLUSTER, DEMAND, SLO, latency_headroom=1.5)
    throughput = plan(MODEL, CLUSTER, DEMAND, SLO)
    assert fast.method.endswith("+latency")
    assert fast.alpha >= 1.5 - 1e-9
    rates = np.array([d.rate_rps for d in DEMAND])

    def mean(p) -> float:
        return min_latency(
            rates, p.mu_rps, fast.latency_s, fast.packing, headroom=1.0, counts=p.counts
        ).mean_latency_s

    assert mean(fast) <= mean(throughput) + 1e-9
    # fixed counts can never beat the free optimum
    free = min_latency(rates, fast.mu_rps, fast.latency_s, fast.packing, headroom=1.5)
    assert free.mean_latency_s <= mean(fast) + 1e-9
    assert np.allclose(free.shares[rates > 0].sum(axis=1), 1.0)


def test_latency_mode_is_skipped_without_room() -> None:
    busy = [TypeDemand(d.name, d.rate_rps * 1000, d.prompt_tokens, d.output_tokens) for d in DEMAND]
    p = plan(MODEL, CLUSTER, busy, SLO, latency_headroom=1.5)
    assert not p.method.endswith("+latency") and p.alpha < 1.5 and p.latency_s is None
    latency = latency_matrix(CapacityModel(MODEL, SLO), busy, p.configs)
    rates = np.array([d.rate_rps for d in busy])
    assert min_latency(rates, p.mu_rps, latency, p.packing, headroom=1.5).mean_latency_s == np.inf


def test_ranking_takes_the_lowest_p99_among_goodput_ties() -> None:
    # goodput first; within 0.5% of the best, the lowest p99 wins
    assert best_index([(10.0, 9.0), (10.04, 5.0), (10.05, 7.0)]) == 1
    assert best_index([(10.0, 9.0), (9.8, 5.0), (10.05, 7.0)]) == 2  # 9.8 is outside both ties
    assert best_index([(9.9, 5.0), (10.05, 7.0)], tie=0.02) == 0


@pytest.mark.parametrize(
    ("scores", "old", "new"),
    [
        # as 8B swing's start was (docs/adapt.md): a P/D pool 0.8% ahead in goodput, p99 1.78 s against 1.59 s
        ([(15.70, 1.59), (15.83, 1.78)], 1, 0),
        # a clear goodput edge (5%) still wins over a better tail
        ([(15.0, 1.0), (15.83, 1.78)], 1, 1),
        # a tail better by less than TAIL_GAIN does not trade goodput past the tie
        ([(15.70, 1.65), (15.83, 1.78)], 1, 1),
        # among the guard's candidates goodput first again (9.81 is outside TIE of 9.9) ...
        ([(10.0, 10.0), (9.9, 8.5), (9.81, 8.0)], 0, 1),
        # ... and the guard repeats while the tail keeps improving by more than TAIL_GAIN
        ([(10.0, 10.0), (9.9, 8.5), (9.85, 6.0)], 0, 2),
        # with means: a better tail bought with a mean E2E more than TAIL_GAIN higher is no win (8B swing's
        # 6P TP1 + 1D TP2 pool against 4 x TP2: p99 1.29 against 1.53 s, mean 0.32 against 0.19 s) ...
        ([(15.83, 1.78, 0.20), (15.78, 1.53, 0.19), (15.72, 1.29, 0.32)], 1, 1),
        # ... a mean within TAIL_GAIN lets the tail win, as without means
        ([(15.83, 1.78, 0.20), (15.78, 1.53, 0.19), (15.72, 1.29, 0.20)], 1, 2),
        ([(15.83, 1.78), (15.78, 1.53), (15.72, 1.29)], 1, 2),
    ],
)
def test_the_tail_guard_does_not_trade_a_worse_tail_for_a_goodput_edge(scores, old, new) -> None:
    assert best_index(scores, tail_tie=TIE) == old  # the guard off: the old ranking
    assert best_index(scores) == new


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.floats(1.0, 100.0), st.floats(0.1, 100.0)), min_size=1, max_size=12))
def test_the_ranking_keeps_goodput_within_the_tail_tie_and_no_clearly_better_tail(scores) -> None:
    i = best_index(scores)
    top = max(g for g, _ in scores)
    assert scores[i][0] >= top * (1 - TAIL_TIE)
    near = [q for g, q in scores if g >= top * (1 - TAIL_TIE)]
    assert min(near) >= scores[i][1] * (1 - TAIL_GAIN)  # no candidate near the top with a much better tail
    if all(q >= scores[best_index(scores, tail_tie=TIE)][1] * (1 - TAIL_GAIN) for q in near):
        assert i == best_index(scores, tail_tie=TIE)  # the guard changes nothing when it does not fire


@pytest.mark.slow
def test_simulation_check_never_loses_to_its_seed(shared_traces) -> None:
    trace = window(scale_rate(load_trace(shared_traces / "azure_code_2023.csv"), 4.0), 0.0, 180.0)
    demands, grid = demands_from_trace(trace, peak_quantile=0.9)
    seed_dep = plan(MODEL, CLUSTER, demands, SLO, grid=grid).baseline
    seed = simulate(trace, seed_dep, MODEL, CLUSTER, router="weighted", slo=SLO.to_dict())
    v = simulated_best_plan(
        trace, MODEL, CLUSTER, SLO, quantiles=(0.9,), seeds=[("seed", seed_dep, "weighted", seed)]
    )
    assert v.result.summary["goodput_rps"] >= seed.summary["goodput_rps"] * (1 - 0.005)
    assert {t.label for t in v.tried} >= {"seed", "plan@p90"}
    # the seed's deployment is also tried under the plan's routers
    assert {(t.label, t.router) for t in v.tried} >= {("seed", "weighted"), ("seed", "allowed-least-load")}
    # the planner's own homogeneous deployment is tried only when no seed has its shape (here the seed is it)
    assert not any(t.label.startswith("homogeneous@") for t in v.tried)
    assert len(v.tried) >= 3 and v.label in {t.label for t in v.tried}

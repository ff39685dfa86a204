"""The fleet MILP: a small instance against brute force, NIW deadlines, routing, and infeasibility explained."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from fleet_factories import make_problem, make_table

from oserve.fleet import explain, solve_fleet


def _brute_force(loads, mu, gpus, pool, price, load_h) -> float:
    """Cheapest integer counts per hour (IW only, one region): GPUs x price each hour plus model-load cost of
    every added instance, capacity at least the load."""
    per_hour = []
    for load in loads:
        options = [
            n
            for n in itertools.product(*(range(pool // g + 1) for g in gpus))
            if sum(k * g for k, g in zip(n, gpus, strict=True)) <= pool
            and sum(k * m for k, m in zip(n, mu, strict=True)) >= load - 1e-9
        ]
        per_hour.append(options)
    best = np.inf
    for plan in itertools.product(*per_hour):
        cost, before = 0.0, (0,) * len(gpus)
        for n in plan:
            cost += price * sum(k * g for k, g in zip(n, gpus, strict=True))
            cost += sum(max(0, k - b) * g * load_h * price for k, b, g in zip(n, before, gpus, strict=True))
            before = n
        best = min(best, cost)
    return best


@pytest.mark.parametrize("loads", [[12.0, 37.0, 5.0], [3.0, 44.0, 44.0], [19.0, 0.0, 26.0]])
def test_small_milp_matches_brute_force(loads) -> None:
    table = make_table([(0, 1, 10.0, 12.0), (0, 2, 24.0, 30.0)])
    iw = np.array(loads)[None, None, :]
    problem = make_problem(table, iw, pools=[8], load_min=6.0)
    plan = solve_fleet(problem, mip_rel_gap=1e-9)
    assert plan.feasible and plan.status == "optimal"
    expected = _brute_force(loads, [10.0, 24.0], [1, 2], 8, 2.0, 0.1)
    counts = plan.counts[0]  # configs x hours
    cost = 2.0 * (counts * np.array([[1], [2]])).sum()
    added = np.maximum(np.diff(np.concatenate([np.zeros((2, 1)), counts], axis=1), axis=1), 0)
    cost += (added * np.array([[1], [2]])).sum() * 0.1 * 2.0
    assert cost == pytest.approx(expected, rel=1e-6)
    capacity = counts[0] * 10.0 + counts[1] * 24.0
    assert np.all(capacity >= np.array(loads) - 1e-6)


def test_niw_waits_for_the_trough_and_meets_its_deadline() -> None:
    table = make_table([(0, 1, 10.0, 10.0)])
    iw = np.array([[[38.0, 38.0, 2.0, 2.0, 2.0, 2.0]]])
    niw = np.array([[36000.0 * 2, 0, 0, 0, 0, 0]])  # 20 req/s-hours of work, arriving in hour 0, due in 4 h
    plan = solve_fleet(make_problem(table, iw, pools=[8], niw=niw, deadline_h=4), mip_rel_gap=1e-9)
    assert plan.feasible
    served = plan.niw_served[0, 0]
    assert served[:4].sum() == pytest.approx(72000, rel=1e-6)  # all done by the end of hour 3
    assert served[:2].sum() < served[2:4].sum()  # mostly after the IW peak


def test_iw_routes_to_a_near_region_when_its_pool_is_full() -> None:
    table = make_table([(0, 1, 10.0, 10.0)])
    iw = np.array([[[50.0, 50.0]], [[5.0, 5.0]]])
    latency = np.array([[0.0, 40.0], [40.0, 0.0]])
    plan = solve_fleet(make_problem(table, iw, pools=[3, 8], latency_ms=latency), mip_rel_gap=1e-9)
    assert plan.feasible
    assert plan.iw_routed[0, 1, 0].min() == pytest.approx(20.0)  # 30 req/s at home, 20 sent west
    assert plan.counts[0, 0].tolist() == [3, 3] and plan.counts[1, 0].tolist() == [3, 3]


def test_full_pool_is_explained_by_region_hour_and_constraint() -> None:
    table = make_table([(0, 1, 10.0, 10.0), (0, 2, 24.0, 30.0)])
    iw = np.array([[[10.0, 110.0, 10.0]], [[10.0, 10.0, 10.0]]])
    latency = np.array([[0.0, 300.0], [300.0, 0.0]])  # too far to route IW
    problem = make_problem(table, iw, pools=[8, 8], latency_ms=latency)
    plan = solve_fleet(problem)
    assert not plan.feasible
    shortfalls = explain(problem, plan)
    assert len(shortfalls) == 1
    s = shortfalls[0]
    assert (s.tier, s.region, s.hour, s.constraint) == ("iw", "r0", 1, "pool")
    assert s.amount == pytest.approx(110.0 - 4 * 24.0)  # four TP2 instances fill the 8 GPUs
    assert "IW demand of m0 in r0 at hour 1" in s.message and "GPU pool size" in s.message
    assert "H100-SXM-80GB (8 GPUs)" in s.message


def test_lead_time_is_named_when_added_instances_cannot_serve_in_time() -> None:
    table = make_table([(0, 1, 10.0, 10.0)])
    iw = np.array([[[30.0, 30.0]]])
    loss = np.array([[[1.0, 0.0]]])  # lead + load longer than the first hour
    problem = make_problem(table, iw, pools=[8], loss=loss)
    plan = solve_fleet(problem)
    shortfalls = explain(problem, plan)
    assert [(s.hour, s.constraint) for s in shortfalls] == [(0, "lead_time")]
    assert "scale-out lead time" in shortfalls[0].message


def test_niw_deadline_shortfall_is_explained() -> None:
    table = make_table([(0, 1, 10.0, 10.0)])
    iw = np.zeros((1, 1, 4))
    niw = np.array([[4 * 3600 * 10.0 * 3, 0, 0, 0]])  # three times what 4 instances drain in the deadline
    problem = make_problem(table, iw, pools=[4], niw=niw, deadline_h=2)
    plan = solve_fleet(problem)
    assert not plan.feasible
    (s,) = explain(problem, plan)
    assert s.tier == "niw" and s.constraint == "niw_deadline" and s.hour == 1
    assert "cannot finish within the 2 h deadline" in s.message and "r0 (2 of 2 h)" in s.message

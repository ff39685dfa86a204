"""The exact MILP against brute force, and the refinement against the MILP."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factories import make_replica
from oserve.planner import max_load_scale, optimal_counts, packing_rows, refine
from oserve.spec import parse_cluster

CLUSTER = parse_cluster("1x8xH100")
CONFIGS = [make_replica("h100", tp=tp) for tp in (1, 2, 4, 8)]


def _brute_force(rates, mu, rows) -> float:
    best = 0.0
    for counts in itertools.product(range(9), range(5), range(3), range(2)):
        c = np.array(counts)
        if rows.feasible(c):
            best = max(best, max_load_scale(rates, mu, c).alpha)
    return best


@settings(max_examples=8, deadline=None)
@given(st.integers(0, 10_000))
def test_the_milp_finds_the_brute_force_optimum(seed) -> None:
    rng = np.random.default_rng(seed)
    rates = rng.uniform(0.5, 10, 3)
    # capacity per replica grows sublinearly or superlinearly with its GPUs, differently per type
    mu = np.array([[rng.uniform(0.5, 3) * g ** rng.uniform(0.6, 1.4) for g in (1, 2, 4, 8)] for _ in rates])
    rows = packing_rows(CLUSTER, CONFIGS)
    exact = optimal_counts(rates, mu, rows)
    assert exact.status == "optimal"
    assert rows.feasible(exact.counts)
    assert exact.alpha == pytest.approx(_brute_force(rates, mu, rows), rel=1e-4)
    assert max_load_scale(rates, mu, exact.counts).alpha == pytest.approx(exact.alpha, rel=1e-4)


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 10_000))
def test_refinement_only_climbs_and_stays_placeable(seed) -> None:
    rng = np.random.default_rng(seed)
    cluster = parse_cluster("4x8xH100")
    rates = rng.uniform(0.5, 10, 4)
    mu = np.array([[rng.uniform(0.5, 3) * g ** rng.uniform(0.6, 1.4) for g in (1, 2, 4, 8)] for _ in rates])
    rows = packing_rows(cluster, CONFIGS)
    start = np.array([0, 0, 8, 0])  # homogeneous TP4
    result = refine(rates, mu, CONFIGS, rows, start)
    assert result.flow.alpha >= result.start_alpha
    assert rows.feasible(result.counts)
    exact = optimal_counts(rates, mu, rows)
    assert result.flow.alpha <= exact.alpha * (1 + exact.mip_gap + 1e-6)  # optimal within HiGHS's proven gap
    if result.moves:
        assert result.flow.alpha > result.start_alpha


def test_refinement_splits_when_small_replicas_serve_better() -> None:
    """One type whose capacity is superlinear in GPUs for small replicas: TP8 -> TP2s is the move to find."""
    rates = np.array([10.0])
    mu = np.array([[1.0, 3.0, 4.0, 5.0]])  # per GPU: TP2 best
    rows = packing_rows(CLUSTER, CONFIGS)
    result = refine(rates, mu, CONFIGS, rows, np.array([0, 0, 0, 1]))
    assert list(result.counts) == [0, 4, 0, 0]
    assert result.flow.alpha == pytest.approx(1.2)

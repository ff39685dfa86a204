"""The flow LP: alpha, routing shares, duals, on cases small enough to solve by hand."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oserve.planner import max_load_scale


def test_one_type_sums_the_replicas_capacity() -> None:
    r = max_load_scale(np.array([10.0]), np.array([[4.0, 9.0]]), np.array([2, 1]))
    assert r.alpha == pytest.approx((2 * 4 + 9) / 10)
    assert r.shares.sum() == pytest.approx(1.0)
    assert r.utilisation == pytest.approx([1.0, 1.0])


def test_each_type_goes_where_it_is_served_best() -> None:
    """Type 0 runs 2.5x better on group 1, type 1 slightly better on group 0: the LP keeps them apart."""
    rates = np.array([10.0, 5.0])
    mu = np.array([[10.0, 25.0], [5.0, 4.0]])
    r = max_load_scale(rates, mu, np.array([2, 1]))
    # all of type 0 on group 1 (0.4 alpha of it), type 1 fills group 0 (alpha) and the rest of group 1
    assert r.shares[0] == pytest.approx([0.0, 1.0])
    assert r.alpha == pytest.approx(70 / 33)
    assert r.shares.sum(axis=1) == pytest.approx([1.0, 1.0])
    assert np.all(r.utilisation <= 1 + 1e-6)
    assert r.type_bottleneck.sum() == pytest.approx(1.0)


def test_a_type_nobody_can_serve_zeroes_alpha_and_is_named() -> None:
    r = max_load_scale(np.array([1.0, 2.0]), np.array([[3.0, 1.0], [0.0, 0.0]]), np.array([1, 1]))
    assert r.alpha == 0.0
    assert r.limiting_types(["a", "b"]) == [("b", 1.0)]


def test_zero_rate_types_are_ignored_and_empty_load_gives_zero() -> None:
    mu = np.array([[3.0], [0.0]])
    assert max_load_scale(np.array([1.0, 0.0]), mu, np.array([2])).alpha == pytest.approx(6.0)
    assert max_load_scale(np.zeros(2), mu, np.array([2])).alpha == 0.0


def test_replica_value_prices_one_more_replica_including_unused_configs() -> None:
    rates = np.array([4.0, 4.0])
    mu = np.array([[2.0, 8.0], [2.0, 1.0]])
    counts = np.array([2.0, 0.0])
    r = max_load_scale(rates, mu, counts)
    step = 1e-3  # the dual is a derivative: check it on a small slice of a replica
    after = max_load_scale(rates, mu, counts + np.array([0.0, step]))
    assert r.replica_value[1] > 0
    assert (after.alpha - r.alpha) / step == pytest.approx(r.replica_value[1], rel=1e-3)
    assert max_load_scale(rates, mu, counts + np.array([0.0, 1.0])).alpha > r.alpha


@settings(max_examples=30, deadline=None)
@given(
    rates=st.lists(st.floats(0.1, 50), min_size=1, max_size=4),
    seed=st.integers(0, 1000),
    scale=st.floats(0.5, 4.0),
)
def test_alpha_is_inverse_in_the_load_and_never_overloads(rates, seed, scale) -> None:
    rng = np.random.default_rng(seed)
    rates = np.array(rates)
    mu = rng.uniform(0.5, 20, (len(rates), 3))
    counts = rng.integers(1, 4, 3)
    r = max_load_scale(rates, mu, counts)
    assert max_load_scale(rates * scale, mu, counts).alpha == pytest.approx(r.alpha / scale, rel=1e-6)
    load = (rates[:, None] * r.alpha * r.shares / mu).sum(axis=0)
    assert np.all(load <= counts * (1 + 1e-6))

"""Routing policies, table-driven over load states."""

from __future__ import annotations

import numpy as np
import pytest

from oserve.errors import ConfigError
from oserve.routing import ROUTERS, Llumnix, LoadView, make_router


def _view(tokens, queued=None, running=None, alive=None) -> LoadView:
    n = len(tokens)
    return LoadView(
        np.asarray(tokens, float),
        np.asarray(queued or [0] * n),
        np.asarray(running or [0] * n),
        np.asarray(alive or [True] * n),
    )


WEIGHTS = np.array([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])  # type 0 -> replica 0 only; type 1 split 1/2


@pytest.mark.parametrize(
    ("router", "type_index", "view", "expected"),
    [
        ("weighted", 0, _view([900, 0, 0]), 0),  # the plan pins type 0 to replica 0 even when it is busy
        ("weighted", 1, _view([0, 500, 100]), 2),  # among allowed, the least loaded per share
        ("weighted", 1, _view([0, 100, 0], alive=[True, True, False]), 1),  # out-of-service replica skipped
        (
            "weighted",
            0,
            _view([5, 9, 1], alive=[False, True, True]),
            2,
        ),  # plan's replicas all out: least load
        ("least-tokens", 0, _view([30, 10, 20]), 1),
        ("least-tokens", 0, _view([30, 10, 20], alive=[True, False, True]), 2),
        ("jsq", 1, _view([0, 0, 0], queued=[0, 3, 1], running=[0, 2, 2]), 2),
        ("jsq", 0, _view([0, 0, 0], queued=[9, 0, 0]), 0),  # restricted to the type's replicas
    ],
)
def test_router_choices(router: str, type_index: int, view: LoadView, expected: int) -> None:
    assert make_router(router, WEIGHTS).route(type_index, 100, view) == expected


def test_round_robin_cycles_over_live_replicas() -> None:
    r = make_router("round-robin")
    view = _view([0, 0, 0], alive=[True, False, True])
    assert [r.route(0, 1, view) for _ in range(4)] == [0, 2, 0, 2]


def test_no_live_replica_returns_minus_one() -> None:
    view = _view([0, 0], alive=[False, False])
    for name in ROUTERS:
        assert make_router(name, np.ones((1, 2))).route(0, 1, view) == -1


def test_weighted_follows_shares_at_steady_state() -> None:
    r = make_router("weighted", np.array([[0.75, 0.25]]))
    view = _view([0, 0])
    counts = np.zeros(2)
    for _ in range(400):
        i = r.route(0, 100, view)
        counts[i] += 1
        view.outstanding_tokens[i] += 100
    assert counts[0] / counts.sum() == pytest.approx(0.75, abs=0.01)


def test_unknown_router_lists_choices() -> None:
    with pytest.raises(ConfigError, match="round-robin"):
        make_router("random-walk")


def test_weighted_needs_weights() -> None:
    with pytest.raises(ConfigError, match="weights"):
        make_router("weighted")


def _kv_view(free, queued_blocks, running, queued, alive=None) -> LoadView:
    n = len(free)
    view = _view([0] * n, queued, running, alive)
    view.kv_free_blocks = np.asarray(free, float)
    view.kv_queued_blocks = np.asarray(queued_blocks, float)
    return view


@pytest.mark.parametrize(
    ("view", "expected"),
    [
        (_kv_view([100, 100, 100], [0, 0, 0], [4, 1, 2], [0, 0, 0]), 1),  # most blocks per request
        (_kv_view([100, 500, 100], [0, 0, 0], [1, 4, 2], [0, 0, 0]), 1),  # 125 per request beats 100
        (_kv_view([100, 100, 100], [0, 90, 0], [1, 1, 2], [0, 3, 0]), 0),  # queued demand counts
        (_kv_view([100, 100, 100], [0, 0, 0], [4, 1, 2], [0, 0, 0], [True, False, True]), 2),
    ],
)
def test_llumnix_dispatches_to_the_freest(view: LoadView, expected: int) -> None:
    assert make_router("llumnix").route(0, 100, view) == expected


def test_llumnix_pairs_the_least_free_with_the_freest_and_moves_while_the_gap_narrows() -> None:
    r = Llumnix(threshold_blocks=3.0)
    # freeness 1 (queued), 450, 1.25 (below the threshold), 200 blocks per request
    view = _kv_view([50, 900, 5, 400], [40, 0, 0, 0], [8, 2, 4, 2], [2, 0, 0, 0])
    assert r.pairs(view) == [(0, 1), (2, 3)]
    assert r.improves(view, 0, 1, 20)  # a waiting request needing 20 blocks
    assert not r.improves(view, 0, 1, 895)  # would leave the destination below the threshold
    balanced = _kv_view([100, 100], [0, 0], [2, 2], [0, 0])
    assert r.pairs(balanced) == [] and not r.improves(balanced, 0, 1, 5)  # the gap would invert
    # without KV state (a gateway that does not report it): least outstanding tokens, no migration
    assert r.route(0, 1, _view([30, 10, 20])) == 1 and not r.improves(_view([30, 10]), 0, 1, 1)


def test_router_factories_and_bad_llumnix_settings() -> None:
    from functools import partial

    r = make_router(partial(Llumnix, interval_s=2.0))
    assert r.rebalance_interval_s == 2.0
    with pytest.raises(ConfigError, match="interval_s"):
        Llumnix(interval_s=0)
    with pytest.raises(ConfigError, match="link_gb_per_s"):
        Llumnix(link_gb_per_s=0)

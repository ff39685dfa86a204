"""``prefix-aware``: a repeated prefix goes to the replica holding it unless that one is much busier (table-driven,
scores worked by hand with the default weights 1 and 1 and a load span of 8 requests), and in the simulator."""

from __future__ import annotations

import numpy as np
import pytest

from factories import make_replica
from oserve.errors import ConfigError
from oserve.routing import LoadView, PrefixAware, make_router
from oserve.sim import simulate
from oserve.spec import Deployment, get_model, parse_cluster
from oserve.trace import Trace

HELD = [1, 2, 3, 4]  # the prefix replica 0 was sent


def _view(queued, alive=None) -> LoadView:
    n = len(queued)
    return LoadView(np.zeros(n), np.asarray(queued), np.zeros(n, np.int64), np.asarray(alive or [True] * n))


def _router(**params) -> PrefixAware:
    router = PrefixAware(**params)
    assert router.route(0, 0, _view([0, 1]), prefix=HELD) == 0  # replica 0 is idle: it gets (and holds) it
    return router


@pytest.mark.parametrize(
    ("prefix", "queued", "expected"),
    [
        (HELD, [0, 0], 0),  # equal load: the holder (2 against 1)
        (HELD, [4, 0], 0),  # busier by half the span: 1 + 0.5 against 1
        (HELD, [7, 0], 0),  # 1 + 0.125 against 1
        (HELD, [12, 0], 1),  # busier than the span: 1 + 0 ties 0 + 1, the lower load wins
        ([1, 2, 9, 9], [2, 0], 0),  # half the prefix held: 0.5 + 0.75 against 1
        ([1, 2, 9, 9], [6, 0], 1),  # 0.5 + 0.25 against 1
        ([9, 1, 2, 3], [0, 1], 0),  # no leading block held: load alone (1 against 0.875)
        ([9, 1, 2, 3], [1, 0], 1),
        ([], [1, 0], 1),  # no hashes: load alone
    ],
)
def test_prefix_against_load(prefix, queued, expected) -> None:
    assert _router().route(0, 0, _view(queued), prefix=prefix) == expected


def test_out_of_service_holder_is_skipped() -> None:
    assert _router().route(0, 0, _view([0, 5], alive=[False, True]), prefix=HELD) == 1
    assert _router().route(0, 0, _view([0, 0], alive=[False, False]), prefix=HELD) == -1


def test_plan_weights_restrict_the_candidates() -> None:
    router = PrefixAware(np.array([[0.0, 1.0]]))
    assert router.route(0, 0, _view([0, 9]), prefix=HELD) == 1


def test_weights_trade_prefix_for_load() -> None:
    # load weight 0: the holder wins however busy; prefix weight 0: the least loaded
    assert _router(load_weight=0.0).route(0, 0, _view([50, 0]), prefix=HELD) == 0
    assert _router(prefix_weight=0.0).route(0, 0, _view([1, 0]), prefix=HELD) == 1


def test_index_is_lru_bounded_per_replica() -> None:
    router = _router(capacity_blocks=4)
    assert router.matched(0, HELD) == 4
    router.route(0, 0, _view([0, 5]), prefix=[5, 6])  # 1 and 2 are the least recently routed: evicted
    assert router.matched(0, HELD) == 0 and router.matched(0, [3, 4, 5, 6]) == 4
    assert router.matched(1, HELD) == 0


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"load_span": 0}, "load_span"),
        ({"capacity_blocks": 0}, "capacity"),
        ({"prefix_weight": -1}, "weight"),
    ],
)
def test_bad_parameters(params, match) -> None:
    with pytest.raises(ConfigError, match=match):
        PrefixAware(**params)


def test_registered_by_name() -> None:
    assert isinstance(make_router("prefix-aware"), PrefixAware)


def test_simulator_sends_a_shared_prefix_where_it_is_cached() -> None:
    """Two replicas; requests 0 and 2 share 3 blocks. When request 2 arrives, replica 0 still decodes request 0
    and replica 1 has finished request 1: least load sends it to replica 1, which recomputes it; prefix-aware to
    replica 0 (busier by about 2 of the 8-request span), where it hits."""
    hashes = [[1, 2, 3, 4], [7, 8, 9, 10], [1, 2, 3, 11]]
    trace = Trace.from_arrays([0.0, 0.5, 1.0], [2048] * 3, [2000, 10, 200], extras={"hash_ids": hashes})
    cluster = parse_cluster("1x2xH100")
    dep = Deployment.homogeneous("llama-3.1-8b", cluster, make_replica(), count=2)
    model = get_model("llama-3.1-8b")
    by = {}
    for router in ("allowed-least-load", "prefix-aware"):
        result = simulate(trace, dep, model, cluster, router=router, oracle_lengths=True)
        by[router] = result.records
    assert by["allowed-least-load"]["cached_tokens"].tolist() == [0, 0, 0]
    assert by["prefix-aware"]["replica"].iloc[2] == by["prefix-aware"]["replica"].iloc[0]
    assert by["prefix-aware"]["cached_tokens"].tolist() == [0, 0, 1536]

"""allowed-least-work: least outstanding work per unit of replica speed, among the replicas a type may use."""

from __future__ import annotations

import numpy as np
from tests.factories import make_replica

from oserve.routing import LoadView, make_router, replica_speed


def _view(tokens, speed) -> LoadView:
    view = LoadView.empty(len(tokens), speed)
    view.outstanding_tokens[:] = tokens
    return view


def test_a_faster_replica_takes_more_tokens() -> None:
    speed = [replica_speed(make_replica(tp=4)), replica_speed(make_replica(tp=8))]
    assert speed[1] == 2 * speed[0]
    router = make_router("allowed-least-work")
    # TP8 holds 1.5x the tokens of TP4 but drains them in 0.75 of the time
    assert router.route(0, 100, _view([1000, 1500], speed)) == 1
    assert router.route(0, 100, _view([1000, 2500], speed)) == 0
    # without speeds it is least tokens
    assert router.route(0, 100, _view([1000, 1500], None)) == 0


def test_only_allowed_replicas_unless_none_is_in_service() -> None:
    weights = np.array([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
    router = make_router("allowed-least-work", weights)
    view = _view([5000, 0, 10], [1, 1, 1])
    assert router.route(0, 10, view) == 0
    assert router.route(1, 10, view) == 1
    view.in_service[0] = False
    assert router.route(0, 10, view) == 1  # its only replica is out: any live one beats dropping

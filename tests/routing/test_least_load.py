"""allowed-least-load: fewest requests (plus token backlog) per unit of replica speed, among a type's replicas."""

from __future__ import annotations

import numpy as np
from tests.factories import make_replica

from oserve.routing import LoadView, make_router, replica_speed


def _view(queued, running, tokens, speed=None) -> LoadView:
    view = LoadView.empty(len(tokens), speed)
    view.queued[:] = queued
    view.running[:] = running
    view.outstanding_tokens[:] = tokens
    return view


def test_requests_outweigh_a_prefill_backlog() -> None:
    router = make_router("allowed-least-load")
    # replica 0: 20 decoding sequences with 100 tokens left each; replica 1: one 3,000-token prompt queued
    view = _view([0, 1], [20, 0], [2000, 3000])
    assert router.route(0, 500, view) == 1
    assert make_router("least-tokens").route(0, 500, view) == 0  # what token balancing would have done


def test_token_backlog_breaks_a_tie_in_requests() -> None:
    router = make_router("allowed-least-load")
    assert router.route(0, 100, _view([1, 1], [4, 4], [9000, 500])) == 1
    assert router.route(0, 100, _view([1, 1], [4, 4], [500, 9000])) == 0


def test_a_faster_replica_takes_more_requests() -> None:
    speed = [replica_speed(make_replica(tp=4)), replica_speed(make_replica(tp=8))]
    router = make_router("allowed-least-load")
    assert router.route(0, 0, _view([0, 0], [10, 15], [0, 0], speed)) == 1  # 15 at twice the speed < 10
    assert router.route(0, 0, _view([0, 0], [10, 25], [0, 0], speed)) == 0


def test_only_allowed_replicas_unless_none_is_in_service() -> None:
    weights = np.array([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
    router = make_router("allowed-least-load", weights)
    view = _view([3, 0, 0], [9, 0, 1], [5000, 0, 10])
    assert router.route(0, 10, view) == 0
    assert router.route(1, 10, view) == 1
    view.in_service[0] = False
    assert router.route(0, 10, view) == 1
    view.in_service[:] = False
    assert router.route(0, 10, view) == -1

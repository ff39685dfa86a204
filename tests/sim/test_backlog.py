"""A replay that starts from the work in flight: ``ClusterView.backlog`` and ``simulate(..., backlog=...)``, on a
slice of the real Azure conversation trace."""

from __future__ import annotations

import math

import numpy as np
import pytest

from oserve.planner import default_slo
from oserve.planner.placement import place
from oserve.sim import ClusterView, simulate
from oserve.sim.backlog import Backlog
from oserve.spec import Deployment, ReplicaConfig, get_model, parse_cluster
from oserve.trace import load_trace, scale_rate, window

MODEL, CLUSTER = get_model("llama-3-8b"), parse_cluster("1x2xH100")
SLO = default_slo(MODEL, CLUSTER)
NOW_S = 40.0


class Capture:
    """A policy that only looks: the view at ``at_s``."""

    def __init__(self, at_s: float) -> None:
        self.at_s = at_s
        self.view: ClusterView | None = None

    def next_decision(self, now: float) -> float | None:
        return self.at_s if now < self.at_s else None

    def decide(self, now: float, view: ClusterView):
        self.view = view
        return None


@pytest.fixture(scope="module")
def busy(shared_traces):
    """Two TP1 replicas under a minute of conversation traffic at 6x: a queue builds."""
    trace = scale_rate(window(load_trace(shared_traces / "azure_conv_2023.csv"), 0.0, 60.0), 6.0)
    h100 = CLUSTER.gpu_types()[0]
    deployment = Deployment(MODEL.name, tuple(place(CLUSTER, [(ReplicaConfig(h100, tp=1), 2)])))
    capture = Capture(NOW_S)
    full = simulate(trace, deployment, MODEL, CLUSTER, router="jsq", policy=capture, slo=SLO.to_dict())
    assert capture.view is not None and capture.view.backlog is not None
    return trace, deployment, full, capture.view.backlog


def test_the_backlog_is_what_the_replicas_hold_at_that_moment(busy) -> None:
    _trace, deployment, full, backlog = busy
    rec = full.records
    held = rec[(rec.arrival_s <= NOW_S) & (rec.finish_s > NOW_S)]
    assert backlog.now_s == NOW_S
    assert len(backlog) == len(held) > 0
    assert np.allclose(np.sort(backlog.arrival_s), np.sort(held.arrival_s.to_numpy()))
    assert set(backlog.replica) <= {r.name for r in deployment.replicas}
    started = backlog.generated_tokens > 0
    assert np.all(backlog.first_token_s[started] <= NOW_S)
    assert np.all(np.isnan(backlog.first_token_s[~started]))
    assert backlog.queued == int((held.first_token_s > NOW_S).sum())


def test_a_replay_from_the_backlog_finishes_it_where_it_was_and_counts_its_wait(busy) -> None:
    trace, deployment, full, backlog = busy
    future = window(trace, NOW_S, 60.0)
    replay = simulate(future, deployment, MODEL, CLUSTER, router="jsq", slo=SLO.to_dict(), backlog=backlog)
    rec = replay.records
    assert len(rec) == len(backlog) + len(future)
    head = rec.iloc[: len(backlog)]
    assert head.finish_s.notna().all() and (head.finish_s > NOW_S).all()
    assert list(head.replica) == list(backlog.replica)  # each back on the replica that held it
    kept = ~np.isnan(backlog.first_token_s)
    assert np.allclose(head.first_token_s.to_numpy()[kept], backlog.first_token_s[kept])
    assert np.allclose(head.arrival_s.to_numpy(), backlog.arrival_s)
    # the queue it starts from delays what comes after: an empty-cluster replay of the same traffic is faster
    empty = simulate(future, deployment, MODEL, CLUSTER, router="jsq", slo=SLO.to_dict())
    tail = rec.iloc[len(backlog) :]
    assert (tail.first_token_s - tail.arrival_s).mean() > empty.summary["ttft_mean"]
    # and it tracks the full run over the same requests (recompute instead of KV kept: a little slower)
    after = full.records[full.records.arrival_s > NOW_S]
    ttft_full = (after.first_token_s - after.arrival_s).mean()
    assert (tail.first_token_s - tail.arrival_s).mean() == pytest.approx(ttft_full, rel=0.5)


def test_backlog_columns_are_sorted_and_outputs_cover_what_was_generated() -> None:
    b = Backlog.of(10.0, ["b", "a"], [5.0, 2.0], [100, 200], [3, 50], [7, 0], [6.0, 4.0])
    assert b.replica == ("a", "b") and list(b.arrival_s) == [2.0, 5.0]
    assert list(b.output_tokens) == [50, 8] and list(b.generated_tokens) == [0, 7]
    assert math.isnan(b.first_token_s[0]) and b.first_token_s[1] == 6.0
    assert len(Backlog.empty(3.0)) == 0 and b.per_replica() == {"a": 1, "b": 1}

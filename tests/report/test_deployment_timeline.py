"""The deployment timeline: the segments it draws for static and switching runs, and the PNG."""

from __future__ import annotations

import pytest

from factories import make_model, make_replica, make_trace
from oserve.report.deployment_timeline import (
    _short_labels,
    deployment_segments,
    plot_deployment_timeline,
    replica_rows,
)
from oserve.sim import ScheduledPolicy, SwitchSchedule, simulate
from oserve.spec import Deployment, Replica, parse_cluster

CLUSTER = parse_cluster("1x8xH100")


def _trace():
    return make_trace(600, rate_rps=200.0, seed=1, prompt_mean_tokens=300, output_mean_tokens=60)


def _switching_run():
    """r0 (GPU 0) kept; r1 (GPU 1) drained and replaced by n1 on GPU 1; n2 (TP2 on free GPUs 4-5) added."""
    trace = _trace()
    old = Deployment.homogeneous("tiny", CLUSTER, make_replica(), 2)
    new = Deployment(
        "tiny",
        (old.replicas[0], Replica(make_replica(), (1,), "n1"), Replica(make_replica(tp=2), (4, 5), "n2")),
    )
    at = float(trace.arrival_s[300])
    sched = SwitchSchedule(mode="drain", drain_s=5.0, start_delay_s={"n1": 0.5, "n2": 0.25})
    policy = ScheduledPolicy([(at, new, sched)])
    return at, simulate(trace, old, make_model(), CLUSTER, router="least-tokens", policy=policy)


def _by_replica(segments):
    out: dict[str, list[tuple[str, float, float]]] = {}
    for s in segments:
        out.setdefault(s.replica, []).append((s.state, s.start_s, s.end_s))
    return out


def test_static_run_is_one_serving_bar_per_replica() -> None:
    dep = Deployment.homogeneous("tiny", CLUSTER, make_replica(tp=2), 3)
    res = simulate(_trace(), dep, make_model(), CLUSTER, router="round-robin")
    span = res.summary["span_s"]
    segments = deployment_segments(res)
    assert [(s.replica, s.config, s.gpu_ids, s.state, s.start_s, s.end_s) for s in segments] == [
        ("r0", "TP2", (0, 1), "serving", 0.0, span),
        ("r1", "TP2", (2, 3), "serving", 0.0, span),
        ("r2", "TP2", (4, 5), "serving", 0.0, span),
    ]


def test_switching_run_segments_follow_the_switch() -> None:
    at, res = _switching_run()
    span = res.summary["span_s"]
    assert replica_rows(res) == ["r0", "r1", "n1", "n2"]  # by GPU id: n1 reuses r1's GPU, after it
    seg = _by_replica(deployment_segments(res))
    # r1 drains: it serves until the switch, then finishes its running requests and releases GPU 1
    rec = res.records
    r1_last_finish = float(rec.loc[rec["replica"] == "r1", "finish_s"].max())
    assert at < r1_last_finish < at + 5.0  # released by draining, before the 5 s deadline
    assert seg["r0"] == [("serving", 0.0, span)]
    assert seg["r1"] == [("serving", 0.0, at), ("draining", at, r1_last_finish)]
    # n1 waits for GPU 1, loads for its 0.5 s start delay, then serves to the end
    assert seg["n1"] == [
        ("loading", r1_last_finish, r1_last_finish + 0.5),
        ("serving", r1_last_finish + 0.5, span),
    ]
    # n2's GPUs were free: it loads from the switch instant for 0.25 s
    assert seg["n2"] == [("loading", at, at + 0.25), ("serving", at + 0.25, span)]
    configs = {s.replica: (s.config, s.gpu_ids) for s in deployment_segments(res)}
    assert configs == {"r0": ("TP1", (0,)), "r1": ("TP1", (1,)), "n1": ("TP1", (1,)), "n2": ("TP2", (4, 5))}
    assert [sw["time_s"] for sw in res.switches] == [at]


def test_requeue_stop_before_ready_has_no_serving_time() -> None:
    """A replica stopped while still loading: loading cut at the stop, never serving, released at once."""
    trace = _trace()
    old = Deployment.homogeneous("tiny", CLUSTER, make_replica(), 1)
    mid = Deployment("tiny", (old.replicas[0], Replica(make_replica(), (3,), "n1")))
    t1, t2 = float(trace.arrival_s[100]), float(trace.arrival_s[200])
    policy = ScheduledPolicy(
        [(t1, mid, SwitchSchedule(start_delay_s=60.0)), (t2, old, SwitchSchedule(mode="requeue"))]
    )
    res = simulate(trace, old, make_model(), CLUSTER, router="round-robin", policy=policy)
    seg = _by_replica(deployment_segments(res))
    assert seg["n1"] == [("loading", t1, t2)]
    assert seg["r0"] == [("serving", 0.0, res.summary["span_s"])]


def test_plot_writes_a_png(tmp_path) -> None:
    _, switching = _switching_run()
    static = simulate(
        _trace(), Deployment.homogeneous("tiny", CLUSTER, make_replica(), 2), make_model(), CLUSTER
    )
    out = plot_deployment_timeline({"switching": switching, "static": static}, tmp_path / "plots")
    assert out == tmp_path / "plots" / "deployment_timeline.png"
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (["H100-SXM-80GB:tp4", "H100-SXM-80GB:tp2pp2"], ["TP4", "TP2PP2"]),
        (["H100-SXM-80GB:tp4", "A100-80GB:tp2"], ["H100-SXM-80GB TP4", "A100-80GB TP2"]),
    ],
)
def test_shape_labels(labels: list[str], expected: list[str]) -> None:
    assert [_short_labels(labels)[label] for label in labels] == expected

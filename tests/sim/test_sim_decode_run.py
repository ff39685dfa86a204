"""Decode runs carried past the arrivals routed elsewhere (``DecodeRun``) give the reference loop's results, where
every arrival ends every engine's run: bit for bit, across routers, switches, PP, preemption and exact ties."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from factories import make_model, make_replica, make_trace
from oserve.routing import ROUTERS
from oserve.sim import ScheduledPolicy, SimResult, SwitchSchedule, simulate
from oserve.sim import cluster as sim_cluster
from oserve.sim.decode_run import Horizon
from oserve.sim.engine import Engine
from oserve.spec import Deployment, Replica, get_model, parse_cluster
from oserve.trace import Trace, load_trace

CLUSTER = parse_cluster("1x8xH100")


def _both(monkeypatch: pytest.MonkeyPatch, *args, **kwargs) -> tuple[SimResult, SimResult]:
    """The run with chained decode runs, and the reference loop's."""
    chained = simulate(*args, **kwargs)
    with monkeypatch.context() as m:
        m.setattr(sim_cluster._Sim, "chain_runs", False)
        reference = simulate(*args, **kwargs)
    return chained, reference


def _assert_same(a: SimResult, b: SimResult) -> None:
    pd.testing.assert_frame_equal(a.records, b.records, check_exact=True)
    pd.testing.assert_frame_equal(a.replicas, b.replicas, check_exact=True)
    assert a.switches == b.switches
    assert repr(a.summary) == repr(b.summary)  # repr: NaN figures compare equal


def _trace(n: int = 800, seed: int = 1) -> Trace:
    return make_trace(n, rate_rps=150.0, seed=seed, prompt_mean_tokens=300, output_mean_tokens=120)


@pytest.mark.parametrize("router", sorted(ROUTERS))
def test_every_router_gets_the_reference_records(monkeypatch, router: str) -> None:
    dep = Deployment.homogeneous("tiny", CLUSTER, make_replica(), 4)
    chained, reference = _both(monkeypatch, _trace(), dep, make_model(), CLUSTER, router=router)
    _assert_same(chained, reference)
    assert chained.summary["completed"] == 800


@pytest.mark.parametrize("mode", ["drain", "requeue"])
def test_switches_with_pipeline_replicas_get_the_reference_records(monkeypatch, mode: str) -> None:
    trace = _trace(900, seed=2)
    old = Deployment.homogeneous("tiny", CLUSTER, make_replica(pp=2), 2)  # GPUs 0-1 and 2-3
    cfg = make_replica()
    new = Deployment(
        "tiny",
        (old.replicas[0], Replica(cfg, (2,), "n1"), Replica(cfg, (3,), "n2"), Replica(cfg, (6,), "n3")),
    )
    back = Deployment("tiny", (Replica(make_replica(pp=2), (2, 3), "m1"), *new.replicas[:1], new.replicas[3]))
    t1, t2 = float(trace.arrival_s[250]), float(trace.arrival_s[600])
    policy = ScheduledPolicy(
        [
            (t1, new, SwitchSchedule(mode=mode, drain_s=0.05, start_delay_s=0.02)),
            (t2, back, SwitchSchedule(mode=mode, drain_s=0.05, start_delay_s={"m1": 0.03})),
        ]
    )
    chained, reference = _both(
        monkeypatch, trace, old, make_model(), CLUSTER, router="least-tokens", policy=policy
    )
    _assert_same(chained, reference)
    assert chained.summary["switches"] == 2 and chained.summary["completed"] == 900


def test_preemption_and_block_limits_get_the_reference_records(monkeypatch) -> None:
    model = get_model("Llama-2-70b-hf")
    replica = make_replica(tp=4, gpu_memory_utilization=0.47)  # a KV cache of a few thousand tokens
    rng = np.random.default_rng(5)
    n = 120
    trace = Trace.from_arrays(
        np.sort(rng.uniform(0, 20, n)), rng.integers(200, 700, n), rng.integers(50, 400, n)
    )
    dep = Deployment.homogeneous("Llama-2-70b-hf", CLUSTER, replica, 2)
    chained, reference = _both(monkeypatch, trace, dep, model, CLUSTER, router="round-robin")
    _assert_same(chained, reference)
    assert chained.summary["preemptions"] > 0


def test_arrivals_exactly_on_step_boundaries_get_the_reference_records(monkeypatch) -> None:
    """An arrival at the very instant a step ends: the loop's event order decides, the same way in both."""
    trace = _trace(300, seed=3)
    dep = Deployment.homogeneous("tiny", CLUSTER, make_replica(), 3)
    ends: list[float] = []
    step = Engine.step

    def recording(self, *args, **kwargs):
        end = step(self, *args, **kwargs)
        if end is not None:
            ends.append(end)
        return end

    with monkeypatch.context() as m:
        m.setattr(sim_cluster._Sim, "chain_runs", False)
        m.setattr(Engine, "step", recording)
        simulate(trace, dep, make_model(), CLUSTER, router="round-robin")
    mid = [t for t in ends if trace.arrival_s[100] < t < trace.arrival_s[200]]
    for t in mid[:: max(1, len(mid) // 6)][
        :6
    ]:  # the events before ``t`` are unchanged, so a step still ends there
        arrival = np.sort(np.append(trace.arrival_s, t))
        i = int(np.searchsorted(arrival, t))
        tied = Trace.from_arrays(
            arrival, np.insert(trace.prompt_tokens, i, 80), np.insert(trace.output_tokens, i, 40)
        )
        _assert_same(*_both(monkeypatch, tied, dep, make_model(), CLUSTER, router="round-robin"))


def test_real_trace_slice_gets_the_reference_records_with_fewer_engine_steps(
    monkeypatch, shared_traces
) -> None:
    trace = load_trace(shared_traces / "azure_conv_2023.csv")
    model, cluster = get_model("Llama-2-70b-hf"), parse_cluster("2x8xH100")
    dep = Deployment.homogeneous("Llama-2-70b-hf", cluster, make_replica(tp=4), 4)
    calls = {True: 0, False: 0}
    step = Engine.step

    def counting(self, *args, **kwargs):
        calls[sim_cluster._Sim.chain_runs] += 1
        return step(self, *args, **kwargs)

    monkeypatch.setattr(Engine, "step", counting)
    chained, reference = _both(monkeypatch, trace, dep, model, cluster, router="weighted", duration_s=300.0)
    _assert_same(chained, reference)
    # the reference loop ends all 4 replicas' runs at every arrival; chained runs end only the one it goes to
    assert calls[True] < 0.7 * calls[False]


def test_horizon_after_and_stops() -> None:
    h = Horizon([1.0, 2.0, 2.0, 5.0], next_arrival_s=1.0, control_s=4.0)
    assert h.now_s == 1.0
    assert [h.after(t) for t in (0.5, 1.0, 1.5, 2.0, 3.0)] == [1.0, 2.0, 2.0, 4.0, 4.0]
    assert [h.stops(t) for t in (1.5, 2.0, 3.9, 4.0, 4.5)] == [False, True, False, True, True]

"""Pipeline parallelism as vLLM runs it: micro-batches queue first in first out on each stage, a long prefill on
a stage delays the micro-batch behind it, and an uncontended pass takes the cost model's iteration time."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from factories import make_replica
from oserve.perf import BatchStats, CostModel
from oserve.sim import simulate
from oserve.sim.pipeline import Pipeline
from oserve.spec import Deployment, get_model, parse_cluster
from oserve.trace import Trace, load_trace, window
from oserve.trace.transforms import scale_rate

MS = 1e-3


def _bare(pp: int, overhead_s: float = 0.0, send_s: float = 0.0) -> Pipeline:
    """A pipeline with a fixed per-step overhead and a fixed send time (no cost model arithmetic)."""
    cm = SimpleNamespace(
        replica=SimpleNamespace(pp=pp),
        calib=SimpleNamespace(
            stack=SimpleNamespace(iteration_overhead_s=overhead_s), p2p_s=lambda _b, inter_node: send_s
        ),
        model=SimpleNamespace(hidden_size=1, dtype_bytes=1),
    )
    return Pipeline(cm)  # type: ignore[arg-type]


def test_two_stages_by_hand() -> None:
    """Micro-batch A (a prefill, 10 ms per stage) and B (a decode, 2 ms per stage), both scheduled at 0, A first:
    A holds stage 1 over [0, 10] and stage 2 over [10, 20]; B waits for stage 1 until 10 ([10, 12]) and for stage 2
    until A leaves it ([20, 22]). Alone, B would be done at 4 ms. Then each virtual engine schedules its next
    decode when its batch is out: A's at 20 (stage 1 [20, 22], stage 2 [22, 24]), B's at 22 (stage 1 [22, 24],
    stage 2 [24, 26]): the pipeline is full again, one batch out every 2 ms."""
    p = _bare(2)
    assert p.schedule(0.0, 20 * MS, 100) == pytest.approx(20 * MS)
    assert p.schedule(0.0, 4 * MS, 1) == pytest.approx(22 * MS)
    assert p.schedule(20 * MS, 4 * MS, 1) == pytest.approx(24 * MS)
    assert p.schedule(22 * MS, 4 * MS, 1) == pytest.approx(26 * MS)
    # an idle pipeline does not hold anyone: alone, B takes its own 4 ms
    assert _bare(2).schedule(5 * MS, 4 * MS, 1) == pytest.approx(9 * MS)


def test_overhead_and_sends_sit_between_the_stages() -> None:
    """1 ms of CPU overhead before stage 1 and a 0.5 ms send between stages: a 2-stage pass of T = 1 + 2 * 3 +
    0.5 = 7.5 ms runs stage 1 over [1, 4] and stage 2 over [4.5, 7.5]; a second batch at 0 of T = 1 + 2 * 1 + 0.5
    enters stage 1 at 4 ([4, 5]), is sent by 5.5 and waits for stage 2 until 7.5 ([7.5, 8.5])."""
    p = _bare(2, overhead_s=1 * MS, send_s=0.5 * MS)
    assert p.schedule(0.0, 7.5 * MS, 10) == pytest.approx(7.5 * MS)
    assert p.schedule(0.0, 3.5 * MS, 10) == pytest.approx(8.5 * MS)


def test_a_long_prefill_delays_the_other_micro_batch_in_the_simulator() -> None:
    """Llama-2-7B as TP1 PP2: a 4,000-token prompt lands on virtual engine 0 at 0, a 10-token one (3 output tokens)
    on engine 1 just after. Step times from the cost model, completion times by hand with the FIFO rule."""
    model = get_model("llama-2-7b")
    config = make_replica(pp=2)
    cm = CostModel(model, config)
    o = cm.calib.stack.iteration_overhead_s

    def send(tokens: int) -> float:
        return cm.calib.p2p_s(tokens * model.hidden_size * model.dtype_bytes, inter_node=False)

    def stage(batch: BatchStats, tokens: int) -> float:
        return (cm.iteration_time(batch) - o - send(tokens)) / 2

    long_stage = stage(BatchStats.of(prefill=[(4000, 0)]), 4000)
    short_prefill = stage(BatchStats.of(prefill=[(10, 0)]), 10)
    dec1, dec2 = stage(BatchStats.of(decode_contexts=[11]), 1), stage(BatchStats.of(decode_contexts=[12]), 1)
    eps = 1e-6
    # A: stage 1 [o, o + L], stage 2 [o + L + send, o + 2L + send]
    a1_out = o + long_stage
    a_done = a1_out + send(4000) + long_stage
    # B's prefill: stage 1 after A's, stage 2 after A leaves it
    b1_out = max(eps + o, a1_out) + short_prefill
    b_first = max(b1_out + send(10), a_done) + short_prefill
    # B's two decodes follow through an empty pipeline (A finished: one output token)
    b_second = b_first + o + 2 * dec1 + send(1)
    b_done = b_second + o + 2 * dec2 + send(1)

    trace = Trace.from_arrays([0.0, eps], [4000, 10], [1, 3])
    dep = Deployment.homogeneous(model.name, parse_cluster("1x2xH100"), config, 1)
    res = simulate(trace, dep, model, router="round-robin", oracle_lengths=True)
    rec = res.records
    assert rec["finish_s"][0] == pytest.approx(a_done, rel=1e-9)
    assert rec["first_token_s"][1] == pytest.approx(b_first, rel=1e-9)
    assert rec["finish_s"][1] == pytest.approx(b_done, rel=1e-9)
    # contended: B's first token waits for A's whole pass, far beyond its own prefill time
    assert rec["first_token_s"][1] - eps > 5 * cm.iteration_time(BatchStats.of(prefill=[(10, 0)]))


def test_contention_costs_latency_against_the_idealised_pipeline(shared_traces, monkeypatch) -> None:
    """The same conversations on TP2PP2, at 4x their rate so the stages are busy: with stages that contend, TTFT
    and E2E are no better than with the old idealisation (each virtual engine as if it had the stages to itself),
    and worse at the tail. (At the hour's own rate the pipeline is mostly idle and the two tails sit within noise.)"""
    trace = scale_rate(window(load_trace(shared_traces / "azure_conv_2023.csv"), 0.0, 120.0), 4.0)
    model = get_model("llama-2-13b")
    dep = Deployment.homogeneous(model.name, parse_cluster("1x4xH100"), make_replica(tp=2, pp=2), 1)
    real = simulate(trace, dep, model, oracle_lengths=True).summary
    with monkeypatch.context() as m:
        m.setattr(Pipeline, "schedule", lambda self, now, step_s, tokens, prefill=False: now + step_s)
        ideal = simulate(trace, dep, model, oracle_lengths=True).summary
    assert real["completed"] == ideal["completed"] > 1600
    assert real["ttft_mean"] >= ideal["ttft_mean"] and real["e2e_mean"] >= ideal["e2e_mean"]
    assert real["ttft_p99"] > ideal["ttft_p99"] * 1.02

"""The engine against hand-stepped cost-model arithmetic: fidelity, chunked prefill, preemption, timer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from factories import make_model, make_replica
from oserve.perf import BatchStats, CostModel
from oserve.sim import Engine, Requests, StepTimer
from oserve.spec import get_model


def _engine(
    num: int,
    prompt: int,
    output: int,
    *,
    kv_blocks: int = 10_000,
    budget: int = 8192,
    max_seqs: int = 256,
    chunked: bool = True,
    cost: CostModel | None = None,
):
    cost = cost or CostModel(make_model(), make_replica())
    req = Requests.of(np.full(num, prompt), np.full(num, output))
    eng = Engine(
        StepTimer(cost),
        req,
        kv_blocks=kv_blocks,
        block_size=16,
        max_num_seqs=max_seqs,
        max_num_batched_tokens=budget,
        chunked_prefill=chunked,
    )
    for rid in range(num):
        eng.add(rid)
    return eng, req, cost


def _drain(eng: Engine, now: float = 0.0, limit: int = 100_000) -> float:
    for _ in range(limit):
        end = eng.step(now)
        if end is None:
            return now
        now = end
    raise AssertionError("engine did not finish")


@pytest.mark.parametrize("num,prompt,output", [(1, 100, 1), (1, 37, 50), (8, 300, 40), (64, 20, 200)])
def test_burst_matches_hand_stepped_cost_model(num: int, prompt: int, output: int) -> None:
    eng, req, cost = _engine(num, prompt, output)
    _drain(eng)
    t = cost.iteration_time(BatchStats.of(prefill=[(prompt, 0)] * num))
    first = t
    for j in range(1, output):  # decode j attends to the prompt and j generated tokens
        t += cost.iteration_time(BatchStats(decode_seqs=num, decode_context_tokens=num * (prompt + j)))
    assert req.first_token_s == pytest.approx([first] * num, rel=1e-12)
    assert req.finish_s == pytest.approx([t] * num, rel=1e-12, abs=1e-12)
    assert all(g == output for g in req.generated)
    assert eng.free_blocks == eng.total_blocks and eng.outstanding == 0
    assert eng.busy_s == pytest.approx(t, rel=1e-12)


def test_chunked_prefill_splits_prompt_across_steps() -> None:
    eng, req, cost = _engine(1, 300, 3, budget=64)
    _drain(eng)
    t = 0.0
    for before in range(0, 300, 64):
        t += cost.iteration_time(BatchStats.of(prefill=[(min(64, 300 - before), before)]))
    assert req.first_token_s[0] == pytest.approx(t, rel=1e-12)
    assert eng.steps == 5 + 2  # ceil(300 / 64) prefill chunks, then two decodes


def test_chunked_prefill_shares_steps_with_decodes() -> None:
    """A second prompt is chunked into the budget left after the first request's decode."""
    eng, req, _ = _engine(2, 100, 20, budget=64)
    _drain(eng)
    assert req.first_token_s[0] < req.first_token_s[1]
    assert req.generated == [20, 20]
    assert eng.steps < 2 * (2 + 19)  # overlapped, not serial


def test_prefill_first_runs_whole_prompts_and_holds_decodes() -> None:
    eng, req, cost = _engine(3, 50, 5, chunked=False, budget=100)
    _drain(eng)
    # budget 100 admits two whole prompts, then the third alone before any decode
    t1 = cost.iteration_time(BatchStats.of(prefill=[(50, 0)] * 2))
    t2 = t1 + cost.iteration_time(BatchStats.of(prefill=[(50, 0)]))
    assert req.first_token_s == pytest.approx([t1, t1, t2], rel=1e-12)


def test_preemption_when_kv_is_tiny_and_all_complete() -> None:
    # each request grows to 40 + 60 - 1 tokens = 7 blocks; 8 of them cannot run together in 20 blocks
    eng, req, _ = _engine(8, 40, 60, kv_blocks=20)
    _drain(eng)
    assert sum(req.preemptions) > 0
    assert req.generated == [60] * 8
    assert all(math.isfinite(f) for f in req.finish_s)
    assert eng.free_blocks == 20 and eng.n_live == 0 and eng.outstanding == 0


def test_preempted_request_recomputes_its_generated_tokens() -> None:
    eng, req, _ = _engine(3, 30, 50, kv_blocks=8)
    _drain(eng)
    assert sum(req.preemptions) > 0 and req.generated == [50, 50, 50]
    # the newest admitted is the victim, so the first request never waits on the others
    assert req.preemptions[0] == 0


def test_max_num_seqs_bounds_the_batch() -> None:
    eng, req, _ = _engine(5, 10, 10, max_seqs=2)
    _drain(eng)
    order = np.argsort(req.finish_s)
    assert list(order[:2]) == [0, 1]


@pytest.mark.parametrize("tp,pp", [(1, 1), (4, 1), (8, 1), (2, 2), (4, 4)])
def test_step_timer_equals_iteration_time(tp: int, pp: int) -> None:
    cost = CostModel(get_model("Llama-2-70b-hf"), make_replica(tp=tp, pp=pp))
    timer = StepTimer(cost)
    rng = np.random.default_rng(tp * 10 + pp)
    for _ in range(200):
        prefill = [
            (int(rng.integers(1, 2000)), int(rng.integers(0, 3000))) for _ in range(rng.integers(0, 4))
        ]
        decodes = rng.integers(1, 4000, size=int(rng.integers(0, 200))).tolist()
        b = BatchStats.of(prefill=prefill, decode_contexts=decodes)
        got = timer.step_time(
            b.prefill_tokens,
            b.prefill_seqs,
            b.prefill_attn_pairs,
            b.prefill_kv_tokens,
            b.decode_seqs,
            b.decode_context_tokens,
        )
        assert got == pytest.approx(cost.iteration_time(b), rel=1e-12, abs=1e-15)
    run = timer.decode_run(32, 32 * 500, 50)
    want = [cost.decode_time(32, 500 + j) for j in range(50)]
    assert run == pytest.approx(want, rel=1e-12)


def test_vectorised_step_times_equal_the_scalar_ones() -> None:
    """The planner's batched path (``StepTimer.step_times`` / ``prefill_times``) is the simulator's arithmetic."""
    for tp, pp in ((4, 1), (2, 2)):
        timer = StepTimer(CostModel(get_model("llama-2-70b"), make_replica("h100", tp=tp, pp=pp)))
        tokens = np.array([1.0, 500.0, 3000.0, 8000.0])
        seqs = np.array([1, 2, 5, 3])
        pairs, kv = tokens * 300.0, tokens + 50.0
        batched = timer.step_times(tokens, seqs, pairs, kv, 37, 37 * 900)
        scalar = [
            timer.step_time(int(a), int(b), c, int(d), 37, 37 * 900)
            for a, b, c, d in zip(tokens, seqs, pairs, kv, strict=True)
        ]
        np.testing.assert_allclose(batched, scalar, rtol=1e-12)
        chunks, before = np.array([17.0, 4096.0]), np.array([0.0, 4096.0])
        expected = [
            timer.step_time(int(c), 1, c * (b + (c + 1) / 2), int(b + c), 8, 8000)
            for c, b in zip(chunks, before, strict=True)
        ]
        np.testing.assert_allclose(timer.prefill_times(chunks, before, 8, 8000), expected, rtol=1e-12)


@pytest.mark.parametrize(
    ("model", "tp", "pp"), [("Llama-2-70b-hf", 4, 1), ("Llama-2-70b-hf", 2, 2), ("llama-3-8b", 1, 1)]
)
def test_decode_step_time_is_convex_in_context(model: str, tp: int, pp: int) -> None:
    """``DecodeRun.lower_bound_s`` bounds a run's end by ``steps x`` the middle step's time (Jensen): it needs
    the step time convex in the context, as a norm of terms affine in it is."""
    timer = StepTimer(CostModel(get_model(model), make_replica(tp=tp, pp=pp)))
    rng = np.random.default_rng(tp + 7 * pp)
    for _ in range(300):
        n = int(rng.integers(1, 256))
        c = int(rng.integers(n, 500_000))
        d = int(rng.integers(1, 50_000))
        left, mid, right = (timer.decode_time(n, c + k * d) for k in (0, 1, 2))
        assert mid <= (left + right) / 2 * (1 + 1e-12)
        steps = int(rng.integers(2, 3000))
        total = float(np.sum(timer.decode_run(n, c, steps)))
        assert steps * timer.decode_time(n, c + n * (steps - 1) / 2) <= total * (1 + 1e-12)


@pytest.mark.parametrize(
    ("model", "tp", "pp"), [("Llama-2-70b-hf", 4, 1), ("Llama-2-70b-hf", 4, 2), ("llama-3-8b", 1, 1)]
)
def test_inlined_decode_attention_is_the_cost_models_bit_for_bit(model: str, tp: int, pp: int) -> None:
    """The timer's inlined decode attention (its hot path) is the cost model's ``decode_attention_kernel_s``
    of ``decode_attention_work``, exactly, on ints, fractional contexts and arrays; and a decode step is
    ``base + scale x`` it, as ``step_time`` composes it."""
    cost = CostModel(get_model(model), make_replica(tp=tp, pp=pp))
    timer = StepTimer(cost)
    rng = np.random.default_rng(tp + 3 * pp)
    for _ in range(300):
        n = int(rng.integers(1, 512))
        ctx = int(rng.integers(n, 2_000_000))
        for c in (ctx, ctx + 0.5):
            want = cost.decode_attention_kernel_s(*cost.decode_attention_work(n, c))
            assert timer._decode_attn(n, c) == want
        assert timer.decode_time(n, ctx) == timer.step_time(0, 0, 0.0, 0, n, ctx)
        steps = int(rng.integers(1, 100))
        ctxs = ctx + n * np.arange(steps, dtype=np.float64)
        want = timer.base(n, n) + cost.attention_layers_scale * cost.decode_attention_kernel_s(
            *cost.decode_attention_work(n, ctxs)
        )
        assert np.array_equal(timer.decode_run(n, ctx, steps), want)

"""``oserve.perf.costmodel``: KV capacity, iteration-time properties and roofline limits."""

from __future__ import annotations

from dataclasses import replace
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factories import make_model, make_replica
from oserve.perf import BatchStats, CostModel, StackFactors, builtin_calibration
from oserve.spec import ModelSpec, get_gpu, get_model

# -- KV capacity ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "gpu", "tp"),
    [
        ("llama-3-8b", "h100", 1),
        ("llama-2-7b", "a100-40gb", 1),
        ("llama-2-70b", "h100", 4),
        ("mixtral-8x7b", "h200", 2),
    ],
)
def test_kv_capacity_positive_when_model_fits(model: str, gpu: str, tp: int) -> None:
    cm = CostModel(get_model(model), make_replica(gpu, tp=tp))
    plan = cm.memory
    assert cm.fits and cm.kv_capacity_tokens > 0
    assert cm.kv_capacity_tokens % cm.replica.block_size == 0
    free = plan.usable_bytes - plan.weight_bytes - plan.activation_bytes - plan.headroom_bytes
    used = cm.kv_capacity_tokens * plan.kv_bytes_per_token
    assert 0 <= free - used < cm.replica.block_size * plan.kv_bytes_per_token


def test_kv_capacity_of_llama3_8b_on_h100_is_plausible() -> None:
    # 72 GB usable - 16 GB weights - activations/headroom leaves ~50 GB, at 128 KiB/token: ~400k tokens.
    cm = CostModel(get_model("llama-3-8b"), make_replica("h100"))
    assert 300_000 < cm.kv_capacity_tokens < 450_000
    assert cm.memory.kv_bytes_per_token == get_model("llama-3-8b").kv_bytes_per_token


@pytest.mark.parametrize(
    ("model", "gpu"), [("llama-2-70b", "h100"), ("qwen2.5-72b", "h200"), ("mixtral-8x7b", "a100")]
)
def test_model_too_large_for_one_gpu_does_not_fit(model: str, gpu: str) -> None:
    cm = CostModel(get_model(model), make_replica(gpu, tp=1))
    assert not cm.fits
    assert cm.kv_capacity_tokens == 0
    assert cm.memory.weight_bytes > cm.memory.usable_bytes


def test_max_model_len_set_must_fit_the_kv_cache() -> None:
    # llama-2-70b on two H100s leaves KV room for under a thousand tokens: not one 4k-token sequence, so vLLM
    # refuses max_model_len=4096; left unset, max_model_len is what the cache holds
    spec = get_model("llama-2-70b")
    default = CostModel(spec, make_replica("h100", tp=2))
    assert 0 < default.kv_capacity_tokens < spec.max_position_embeddings
    assert default.memory.max_model_len == default.kv_capacity_tokens
    assert default.fits
    full = CostModel(spec, make_replica("h100", tp=2, max_model_len=4096))
    assert not full.fits and "max_model_len=4,096" in (full.unfit_reason or "")
    short = CostModel(spec, make_replica("h100", tp=2, max_model_len=512))
    assert short.fits and short.kv_capacity_tokens == default.kv_capacity_tokens
    assert short.memory.max_model_len == 512


def test_max_model_len_defaults_to_the_model_context_within_the_cache() -> None:
    for name, context in [("qwen2.5-7b", 32768), ("llama-3-8b", 8192), ("llama-3.1-8b", 131072)]:
        cm = CostModel(get_model(name), make_replica("h100"))
        assert cm.kv_capacity_tokens > context
        assert cm.memory.max_model_len == get_model(name).max_position_embeddings == context
    # Llama-3.1-70B on 4 x L40S: the cache holds less than 128k tokens, so max_model_len is the cache's
    cm = CostModel(get_model("llama-3.1-70b"), make_replica("l40s", tp=4))
    assert 0 < cm.kv_capacity_tokens < 131072 and cm.memory.max_model_len == cm.kv_capacity_tokens
    # a PP virtual engine holds 1/pp of the cache: 4 x H100 as PP4 hold more than 128k tokens, one stage's
    # engine less
    pp = CostModel(get_model("llama-3.1-70b"), make_replica("h100", tp=1, pp=4))
    assert pp.kv_capacity_tokens > 131072 > pp.memory.max_model_len
    assert 0 < pp.memory.max_model_len <= pp.kv_capacity_tokens // 4
    # no KV room at all: it does not fit
    assert not CostModel(get_model("llama-2-70b"), make_replica("h100", tp=1)).fits


def test_throughput_bound() -> None:
    cm = CostModel(get_model("llama-3-8b"), make_replica("h100"))
    short, long = cm.throughput_bound_rps(1000, 200), cm.throughput_bound_rps(1000, 400)
    assert 0 < long < short
    assert cm.throughput_bound_rps(100, 200) > cm.throughput_bound_rps(4000, 200)
    assert CostModel(get_model("llama-2-70b"), make_replica("h100")).throughput_bound_rps(1000, 200) == 0.0


@pytest.mark.parametrize(
    ("model", "gpu"), [("llama-2-70b", "h100"), ("llama-3-8b", "a100"), ("qwen2.5-32b", "l40s")]
)
def test_kv_capacity_grows_with_tp(model: str, gpu: str) -> None:
    caps = [CostModel(get_model(model), make_replica(gpu, tp=tp)).kv_capacity_tokens for tp in (1, 2, 4, 8)]
    fitting = [c for c in caps if c > 0]
    assert len(fitting) >= 2
    assert caps == sorted(caps)
    assert all(b > a for a, b in pairwise(fitting))


@pytest.mark.parametrize(
    ("model", "tp", "kv_heads_per_gpu"),
    [
        ("qwen2.5-7b", 2, 2),  # 4 KV heads split 2 ways
        ("qwen2.5-7b", 4, 1),
        ("qwen2.5-7b", 8, 1),  # tp > KV heads: each GPU holds a replica of one head
        ("llama-2-70b", 8, 1),
        ("llama-2-70b", 16, 1),
        ("llama-2-7b", 8, 4),  # MHA: 32 heads
    ],
)
def test_kv_heads_replicate_when_tp_exceeds_them(model: str, tp: int, kv_heads_per_gpu: int) -> None:
    spec = get_model(model)
    cm = CostModel(spec, make_replica("h100", tp=tp))
    assert cm.shape.kv_per_gpu == kv_heads_per_gpu * spec.head_dim
    assert cm.shape.kv_per_gpu >= spec.head_dim
    assert cm.memory.kv_bytes_per_token == 2 * spec.num_layers * cm.shape.kv_per_gpu * spec.dtype_bytes
    assert cm.memory.kv_bytes_per_token >= spec.kv_bytes_per_token // tp


def test_weights_per_gpu_split_by_tp_and_pp() -> None:
    spec = get_model("llama-2-70b")
    for tp in (2, 4, 8):
        cm = CostModel(spec, make_replica("h100", tp=tp))
        assert cm.memory.weight_bytes == pytest.approx(spec.weight_bytes / tp, rel=0.01)
    pp2 = CostModel(spec, make_replica("h100", tp=2, pp=2))
    pp1 = CostModel(spec, make_replica("h100", tp=2))
    # each stage holds half the layers and one of the two embedding tables
    assert pp2.memory.weight_bytes == pytest.approx(spec.weight_bytes / 4, rel=0.02)
    assert pp2.memory.kv_bytes_per_token * 2 == pp1.memory.kv_bytes_per_token
    assert pp2.kv_capacity_tokens > pp1.kv_capacity_tokens


@pytest.mark.parametrize(
    ("knob", "low", "high"),
    [("gpu_memory_utilization", 0.5, 0.9), ("max_num_batched_tokens", 65536, 2048)],
)
def test_kv_capacity_shrinks_with_less_room(knob: str, low: float, high: float) -> None:
    spec = get_model("llama-3-8b")
    small = CostModel(spec, make_replica("h100", **{knob: low}))
    large = CostModel(spec, make_replica("h100", **{knob: high}))
    assert 0 < small.kv_capacity_tokens < large.kv_capacity_tokens


def test_headroom_reduces_capacity_by_its_size() -> None:
    spec = get_model("llama-3-8b")
    base = CostModel(spec, make_replica("h100"), headroom_gib=1.0)
    more = CostModel(spec, make_replica("h100"), headroom_gib=3.0)
    lost = (base.kv_capacity_tokens - more.kv_capacity_tokens) * base.memory.kv_bytes_per_token
    assert lost == pytest.approx(2 * 2**30, rel=0.01)


# -- BatchStats -----------------------------------------------------------------------------------------------


def test_batchstats_of_aggregates() -> None:
    b = BatchStats.of(prefill=[(100, 0), (50, 200)], decode_contexts=[10, 20, 30])
    assert b.prefill_tokens == 150
    assert b.prefill_seqs == 2
    assert b.prefill_attn_pairs == pytest.approx(100 * (0 + 101 / 2) + 50 * (200 + 51 / 2))
    assert b.prefill_kv_tokens == 100 + 250
    assert (b.decode_seqs, b.decode_context_tokens) == (3, 60)
    assert b.num_tokens == 153
    assert b.logits_seqs is None


def test_batchstats_of_nothing_is_empty() -> None:
    assert BatchStats.of() == BatchStats()
    assert BatchStats().num_tokens == 0


def test_single_token_prefill_attends_to_itself_once() -> None:
    assert BatchStats.of(prefill=[(1, 0)]).prefill_attn_pairs == 1.0


# -- iteration time: properties ---------------------------------------------------------------------------------

CONFIGS = [
    ("llama-3-8b", "h100", 1, 1),
    ("llama-3-8b", "a100", 2, 1),
    ("llama-2-70b", "h100", 4, 1),
    ("llama-2-70b", "a100", 4, 2),
    ("mixtral-8x7b", "h100", 2, 1),
    ("qwen2.5-7b", "l40s", 8, 1),
]
MODELS = {cfg: CostModel(get_model(cfg[0]), make_replica(cfg[1], tp=cfg[2], pp=cfg[3])) for cfg in CONFIGS}
configs = st.sampled_from(CONFIGS)
chunks = st.lists(st.tuples(st.integers(1, 4096), st.integers(0, 8192)), max_size=4)
contexts = st.lists(st.integers(1, 16384), max_size=64)


@settings(max_examples=60, deadline=None)
@given(cfg=configs, prefill=chunks, decode=contexts, extra=st.integers(1, 4096), which=st.integers(0, 4))
def test_time_monotone_in_prefill_tokens(cfg, prefill, decode, extra, which) -> None:
    cm = MODELS[cfg]
    before = cm.iteration_time(BatchStats.of(prefill, decode))
    if prefill:
        i = which % len(prefill)
        grown = [*prefill[:i], (prefill[i][0] + extra, prefill[i][1]), *prefill[i + 1 :]]
    else:
        grown = [(extra, 0)]
    assert cm.iteration_time(BatchStats.of(grown, decode)) >= before


@settings(max_examples=60, deadline=None)
@given(
    cfg=configs, prefill=chunks, decode=contexts, new=st.lists(st.integers(1, 16384), min_size=1, max_size=64)
)
def test_time_monotone_in_decode_batch(cfg, prefill, decode, new) -> None:
    cm = MODELS[cfg]
    assert cm.iteration_time(BatchStats.of(prefill, [*decode, *new])) >= cm.iteration_time(
        BatchStats.of(prefill, decode)
    )


@settings(max_examples=60, deadline=None)
@given(cfg=configs, n=st.integers(1, 512), ctx=st.integers(1, 32768), more=st.integers(1, 32768))
def test_decode_time_monotone_in_batch_and_context(cfg, n, ctx, more) -> None:
    cm = MODELS[cfg]
    t = cm.decode_time(n, ctx)
    assert t > 0
    assert cm.decode_time(n, ctx + more) >= t
    assert cm.decode_time(n + 1 + more % 256, ctx) >= t


@settings(max_examples=60, deadline=None)
@given(cfg=configs, prefill=chunks, decode=contexts, more=st.integers(1, 16384), which=st.integers(0, 64))
def test_time_monotone_in_context_length(cfg, prefill, decode, more, which) -> None:
    cm = MODELS[cfg]
    before = cm.iteration_time(BatchStats.of(prefill, decode))
    if prefill:
        i = which % len(prefill)
        longer = [*prefill[:i], (prefill[i][0], prefill[i][1] + more), *prefill[i + 1 :]]
        assert cm.iteration_time(BatchStats.of(longer, decode)) >= before
    if decode:
        i = which % len(decode)
        longer_decode = [*decode[:i], decode[i] + more, *decode[i + 1 :]]
        assert cm.iteration_time(BatchStats.of(prefill, longer_decode)) >= before


@settings(max_examples=40, deadline=None)
@given(cfg=configs, n=st.integers(1, 8), length=st.integers(1, 8192))
def test_prefill_time_is_iteration_time_of_the_batch(cfg, n, length) -> None:
    cm = MODELS[cfg]
    assert cm.prefill_time(n, length) == cm.iteration_time(BatchStats.of(prefill=[(length, 0)] * n))
    assert cm.prefill_time(n, length) > cm.calib.stack.iteration_overhead_s


def test_empty_batch_takes_no_time() -> None:
    cm = MODELS[CONFIGS[0]]
    assert cm.iteration_time(BatchStats()) == 0.0
    assert cm.stage_time(BatchStats()) == 0.0


def test_fewer_sampling_sequences_is_not_slower() -> None:
    cm = MODELS[CONFIGS[0]]
    batch = BatchStats.of(prefill=[(512, 0)] * 8)
    assert cm.iteration_time(replace(batch, logits_seqs=1)) < cm.iteration_time(batch)


# -- roofline limits ----------------------------------------------------------------------------------------------

ROOFLINE_CONFIGS = [
    ("llama-3-8b", "h100", 1),
    ("llama-3-8b", "h100", 2),
    ("llama-2-7b", "a100", 1),
    ("qwen2.5-7b", "h100", 1),
    ("llama-2-70b", "h100", 4),
    ("qwen2.5-72b", "h200", 4),
    ("mixtral-8x7b", "h100", 2),
]


def _layer_params_active(m: ModelSpec) -> int:
    """Per-token parameters of the transformer layers (attention + routed experts), no embeddings."""
    return m.num_layers * (m.attn_params_per_layer + m.experts_per_token * m.mlp_params_per_expert)


@pytest.mark.parametrize(("model", "gpu", "tp"), ROOFLINE_CONFIGS)
def test_large_prefill_bounded_by_compute_roofline(model: str, gpu: str, tp: int) -> None:
    spec, g = get_model(model), get_gpu(gpu)
    cm = CostModel(spec, make_replica(gpu, tp=tp))
    tokens = 8192
    flops = 2.0 * tokens * _layer_params_active(spec)
    flops += spec.num_layers * 4.0 * spec.q_size * tokens * (tokens + 1) / 2  # causal attention
    roof = flops / tp / g.bf16_flops
    t = cm.prefill_time(1, tokens)
    assert roof <= t < 3 * roof


@pytest.mark.parametrize(("model", "gpu", "tp"), ROOFLINE_CONFIGS)
def test_batch1_decode_bounded_by_weight_reads(model: str, gpu: str, tp: int) -> None:
    spec, g = get_model(model), get_gpu(gpu)
    cm = CostModel(spec, make_replica(gpu, tp=tp))
    # every layer weight a token is routed through, plus the LM head, read once from HBM per GPU
    weight_bytes = spec.dtype_bytes * (_layer_params_active(spec) + spec.vocab_size * spec.hidden_size) / tp
    roof = weight_bytes / (g.hbm_gb_per_s * 1e9)
    t = cm.decode_time(1, 128)
    assert roof <= t < 3 * roof


@pytest.mark.parametrize(("model", "tps"), [("llama-3-8b", (1, 2, 4, 8)), ("llama-2-70b", (2, 4, 8))])
def test_more_tp_lowers_large_prefill_time(model: str, tps: tuple[int, ...]) -> None:
    spec = get_model(model)
    times = [CostModel(spec, make_replica("h100", tp=tp)).prefill_time(1, 8192) for tp in tps]
    assert all(b < a for a, b in pairwise(times))
    # ... but TP is not free: doubling GPUs does not halve the time (all-reduces)
    assert times[-1] > times[0] * tps[0] / tps[-1]


def test_pipeline_latency_exceeds_stage_time() -> None:
    spec = get_model("llama-2-70b")
    pp1 = CostModel(spec, make_replica("h100", tp=4))
    pp2 = CostModel(spec, make_replica("h100", tp=4, pp=2))
    batch = BatchStats.of(prefill=[(2048, 0)], decode_contexts=[1024] * 32)
    stage = pp2.stage_time(batch)
    assert stage < pp1.stage_time(batch)
    assert pp2.iteration_time(batch) > 2 * stage
    act = batch.num_tokens * spec.hidden_size * spec.dtype_bytes
    expected = 2 * stage + pp2.calib.stack.iteration_overhead_s + pp2.calib.p2p_s(act, inter_node=False)
    assert pp2.iteration_time(batch) == pytest.approx(expected)


def test_tp_allreduce_appears_in_breakdown_and_parts_sum_to_total() -> None:
    batch = BatchStats.of(prefill=[(1024, 0)], decode_contexts=[512] * 16)
    tp1 = CostModel(get_model("llama-3-8b"), make_replica("h100")).breakdown(batch)
    tp4 = CostModel(get_model("llama-3-8b"), make_replica("h100", tp=4)).breakdown(batch)
    assert "tp_allreduce" not in tp1 and tp4["tp_allreduce"] > 0
    for parts in (tp1, tp4):
        assert all(v > 0 for v in parts.values())
        assert sum(v for k, v in parts.items() if k != "total") == pytest.approx(parts["total"])


def test_stack_factors_scale_times() -> None:
    spec, replica = get_model("llama-3-8b"), make_replica("h100")
    base_cal = builtin_calibration()
    gpu_cal = base_cal.for_gpu(replica.gpu)

    def model_with(**factors: float) -> CostModel:
        stack = replace(gpu_cal.stack, **factors)
        return CostModel(spec, replica, base_cal.with_gpu(replica.gpu.name, replace(gpu_cal, stack=stack)))

    base = model_with()
    prefill, decode = base.prefill_time(1, 8192), base.decode_time(1, 128)
    slow_compute = model_with(compute_scale=2.0)
    assert prefill * 1.5 < slow_compute.prefill_time(1, 8192) < prefill * 2.0
    assert slow_compute.decode_time(1, 128) == pytest.approx(decode, rel=0.05)
    slow_memory = model_with(memory_scale=2.0)
    assert decode * 1.5 < slow_memory.decode_time(1, 128) < decode * 2.0
    late = model_with(iteration_overhead_s=gpu_cal.stack.iteration_overhead_s + 0.002)
    assert late.decode_time(1, 128) == pytest.approx(decode + 0.002)


def test_small_model_from_factory_runs() -> None:
    cm = CostModel(make_model(), make_replica("l40s"))
    assert cm.fits and cm.kv_capacity_tokens > 1_000_000
    assert 0 < cm.decode_time(1, 16) < cm.prefill_time(4, 512)


def test_default_stack_factors_are_identity() -> None:
    s = StackFactors()
    assert (s.compute_scale, s.memory_scale, s.attention_scale, s.comm_scale) == (1.0, 1.0, 1.0, 1.0)


@pytest.mark.parametrize(("tp", "pp"), [(1, 1), (4, 1), (2, 2)])
def test_memoised_parts_give_the_same_time_as_a_fresh_model(tp: int, pp: int) -> None:
    """The per-token-count and per-sampled-sequences memos change no bit of any iteration time."""
    model, replica = get_model("Llama-2-70b-hf"), make_replica(tp=tp, pp=pp)
    warm = CostModel(model, replica)
    batches = [
        BatchStats.of(prefill=[(300, 0)], decode_contexts=[500] * 20),
        BatchStats.of(decode_contexts=[900] * 320),
        BatchStats(decode_seqs=320, decode_context_tokens=0, logits_seqs=20),
        BatchStats.of(prefill=[(320, 64)]),
    ]
    for b in batches + batches[::-1]:  # the second pass reads the memos the first filled
        assert warm.iteration_time(b) == CostModel(model, replica).iteration_time(b)

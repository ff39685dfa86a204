"""Shards: exact bytes from ``ModelSpec``, vLLM's stage split, TP slices that tile every tensor."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factories import make_model, make_replica
from oserve.adapt.shards import (
    TENSORS,
    ShardRange,
    gpu_shard,
    overlap_bytes,
    replica_shards,
    shard_bytes,
    stage_layers,
    tensor_units,
)
from oserve.spec import Replica, get_model, list_models


@pytest.mark.parametrize("name", list_models())
def test_one_gpu_holds_exactly_the_model(name: str) -> None:
    model = get_model(name)
    assert shard_bytes(model, gpu_shard(model, make_replica(), 0, 0)) == model.weight_bytes


@pytest.mark.parametrize(
    ("layers", "pp", "parts"),
    [
        (32, 4, [8, 8, 8, 8]),
        (22, 4, [5, 6, 6, 5]),
        (5, 3, [2, 2, 1]),
        (61, 2, [31, 30]),
        (61, 4, [15, 15, 16, 15]),
    ],
)
def test_stage_split_is_vllms(layers: int, pp: int, parts: list[int]) -> None:
    spans = [stage_layers(layers, pp, s) for s in range(pp)]
    assert [hi - lo for lo, hi in spans] == parts
    assert spans[0][0] == 0 and spans[-1][1] == layers
    assert all(a[1] == b[0] for a, b in pairwise(spans))


def _cells(ranges: list[ShardRange]) -> dict[tuple[str, int, int], int]:
    """(tensor, layer, unit) -> how many ranges hold it."""
    out: dict[tuple[str, int, int], int] = {}
    for r in ranges:
        for layer in range(r.layer_start, r.layer_stop):
            for unit in range(r.unit_start, r.unit_stop):
                out[r.tensor, layer, unit] = out.get((r.tensor, layer, unit), 0) + 1
    return out


@settings(max_examples=40, deadline=None)
@given(
    tp=st.sampled_from([1, 2, 4, 8]),
    pp=st.integers(1, 3),
    kv_heads=st.sampled_from([1, 2, 4]),
    tied=st.booleans(),
    experts=st.sampled_from([1, 4]),
)
def test_ranks_tile_every_tensor(tp: int, pp: int, kv_heads: int, tied: bool, experts: int) -> None:
    model = make_model(
        num_layers=3,
        num_heads=8,
        num_kv_heads=kv_heads,
        head_dim=4,
        hidden_size=32,
        intermediate_size=24,
        vocab_size=20,
        tie_word_embeddings=tied,
        num_experts=experts,
        experts_per_token=1,
    )
    config = make_replica(tp=tp, pp=pp)
    shards = replica_shards(model, Replica(config, tuple(range(tp * pp)), "r"))
    cells = _cells([r for ranges in shards.values() for r in ranges])
    tensors = {r.tensor for rs in shards.values() for r in rs}
    assert tensors == set(TENSORS) - ({"lm_head"} if tied else set())
    expected = {
        "attn_qo": 1,
        "mlp": 1,
        "attn_kv": max(1, tp // kv_heads),
        "layer_rep": tp,
        "final_norm": tp,
        "embed": 2 if tied and pp > 1 else 1,
        "lm_head": 1,
    }
    assert all(count == expected[tensor] for (tensor, _, _), count in cells.items())
    for tensor in tensors:
        layers = model.num_layers if tensor in ("attn_qo", "attn_kv", "mlp", "layer_rep") else 1
        assert {(layer, u) for (t, layer, u) in cells if t == tensor} == {
            (layer, u) for layer in range(layers) for u in range(tensor_units(model, tensor))
        }
    distinct = sum(ShardRange(t, layer, layer + 1, u, u + 1).bytes(model) for (t, layer, u) in cells)
    assert distinct == model.weight_bytes


def test_kv_heads_replicate_once_tp_exceeds_them() -> None:
    model = get_model("qwen2.5-7b")  # 4 KV heads
    assert model.num_kv_heads == 4
    kv = [
        next(r for r in gpu_shard(model, make_replica(tp=8), 0, rank) if r.tensor == "attn_kv")
        for rank in range(8)
    ]
    assert [(r.unit_start, r.unit_stop) for r in kv] == [(h, h + 1) for h in (0, 0, 1, 1, 2, 2, 3, 3)]


def test_tied_embeddings_live_on_the_first_and_last_stage() -> None:
    model = make_model(num_layers=4, tie_word_embeddings=True)
    first = gpu_shard(model, make_replica(pp=2), 0, 0)
    last = gpu_shard(model, make_replica(pp=2), 1, 0)
    assert any(r.tensor == "embed" for r in first) and any(r.tensor == "embed" for r in last)
    assert not any(r.tensor == "lm_head" for r in first + last)
    assert any(r.tensor == "final_norm" for r in last) and not any(r.tensor == "final_norm" for r in first)


def test_overlap_of_tp8_rank_in_tp4_rank_is_the_eighth() -> None:
    model = get_model("llama-2-70b")
    tp8 = gpu_shard(model, make_replica(tp=8), 0, 1)
    tp4 = gpu_shard(model, make_replica(tp=4), 0, 0)
    shared = overlap_bytes(model, tp8, tp4)
    # everything of TP8 rank 1 lies inside TP4 rank 0 (heads 8-15 of 0-31, KV head 1 of 0-1, ...)
    assert shared == shard_bytes(model, tp8)
    assert overlap_bytes(model, tp8, gpu_shard(model, make_replica(tp=4), 0, 1)) == sum(
        r.bytes(model) for r in tp8 if r.tensor in ("layer_rep", "final_norm")
    )

"""Which weight bytes each GPU of a replica holds: the layers of its pipeline stage x its tensor-parallel slice.

Weights are grouped into tensors that vLLM shards the same way, each a grid of ``layers x units`` with a fixed
byte size per (layer, unit):

| tensor        | units                | bytes per unit                                  | TP sharding                |
| ------------- | -------------------- | ----------------------------------------------- | -------------------------- |
| ``attn_qo``   | attention heads      | ``2 * head_dim * hidden * dtype`` (Q cols, O rows) | by head                  |
| ``attn_kv``   | KV heads             | ``2 * head_dim * hidden * dtype`` (K and V cols)   | by head, replicated once TP > KV heads |
| ``mlp``       | intermediate columns | ``(3 or 2) * hidden * dtype * experts``          | by column (each expert, no EP) |
| ``layer_rep`` | 1                    | ``(2 * hidden + router) * dtype`` (norms, MoE router) | replicated            |
| ``embed``     | vocabulary rows      | ``hidden * dtype``                              | vocab-parallel (first stage; last stage too when tied) |
| ``lm_head``   | vocabulary rows      | ``hidden * dtype``                              | vocab-parallel (last stage, untied) |
| ``final_norm``| 1                    | ``hidden * dtype``                              | replicated (last stage)    |

The sums match ``ModelSpec.params_per_layer`` and ``ModelSpec.weight_bytes`` exactly (a TP1/PP1 replica holds
``weight_bytes``). Stage layer ranges follow vLLM's ``get_pp_indices`` (``vllm/distributed/utils.py``): an even
split, the remainder added from the second-to-last stage backwards. Not modelled: vLLM's vocabulary padding to a
multiple of 64 per rank, attention biases (Qwen's QKV bias) and quantisation scales.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from oserve.spec import ModelSpec, Replica, ReplicaConfig

__all__ = [
    "TENSORS",
    "ShardRange",
    "gpu_shard",
    "overlap_bytes",
    "replica_shards",
    "shard_bytes",
    "stage_layers",
    "tensor_units",
    "unit_bytes",
]

TENSORS = ("attn_qo", "attn_kv", "mlp", "layer_rep", "embed", "lm_head", "final_norm")
_PER_LAYER = frozenset({"attn_qo", "attn_kv", "mlp", "layer_rep"})


@dataclass(frozen=True, slots=True, order=True)
class ShardRange:
    """A block of one tensor: layers ``[layer_start, layer_stop)`` x units ``[unit_start, unit_stop)``.

    Tensors without layers (``embed``, ``lm_head``, ``final_norm``) use the layer range ``[0, 1)``.
    """

    tensor: str
    layer_start: int
    layer_stop: int
    unit_start: int
    unit_stop: int

    @property
    def layers(self) -> int:
        return self.layer_stop - self.layer_start

    @property
    def units(self) -> int:
        return self.unit_stop - self.unit_start

    def bytes(self, model: ModelSpec) -> int:
        return self.layers * self.units * unit_bytes(model, self.tensor)

    def intersect(self, other: ShardRange) -> ShardRange | None:
        if other.tensor != self.tensor:
            return None
        lo_l, hi_l = max(self.layer_start, other.layer_start), min(self.layer_stop, other.layer_stop)
        lo_u, hi_u = max(self.unit_start, other.unit_start), min(self.unit_stop, other.unit_stop)
        if lo_l >= hi_l or lo_u >= hi_u:
            return None
        return ShardRange(self.tensor, lo_l, hi_l, lo_u, hi_u)

    def label(self) -> str:
        layers = f"L{self.layer_start}-{self.layer_stop - 1}" if self.tensor in _PER_LAYER else ""
        return f"{self.tensor}[{layers}{':' if layers else ''}{self.unit_start}:{self.unit_stop}]"


def tensor_units(model: ModelSpec, tensor: str) -> int:
    """How many units a tensor is divided into (heads, KV heads, columns, vocabulary rows, or 1)."""
    return {
        "attn_qo": model.num_heads,
        "attn_kv": model.num_kv_heads,
        "mlp": model.intermediate_size,
        "layer_rep": 1,
        "embed": model.vocab_size,
        "lm_head": model.vocab_size,
        "final_norm": 1,
    }[tensor]


def unit_bytes(model: ModelSpec, tensor: str) -> int:
    """Bytes of one unit of ``tensor`` in one layer."""
    h, d = model.hidden_size, model.dtype_bytes
    if tensor in ("attn_qo", "attn_kv"):
        return 2 * model.head_dim * h * d
    if tensor == "mlp":
        return (3 if model.gated_mlp else 2) * h * d * model.num_experts
    if tensor == "layer_rep":
        return (2 * h + (h * model.num_experts if model.is_moe else 0)) * d
    if tensor in ("embed", "lm_head", "final_norm"):
        return h * d
    raise KeyError(tensor)


def stage_layers(num_layers: int, pp: int, stage: int) -> tuple[int, int]:
    """``[start, stop)`` of the decoder layers on pipeline stage ``stage`` (vLLM's ``get_pp_indices``)."""
    parts = [num_layers // pp] * pp
    for i in range(2, num_layers % pp + 2):
        parts[-i] += 1
    start = sum(parts[:stage])
    return start, start + parts[stage]


def _tp_slice(units: int, tp: int, rank: int) -> tuple[int, int]:
    return rank * units // tp, (rank + 1) * units // tp


def gpu_shard(model: ModelSpec, config: ReplicaConfig, stage: int, rank: int) -> tuple[ShardRange, ...]:
    """The ranges TP rank ``rank`` of pipeline stage ``stage`` holds, in ``TENSORS`` order."""
    tp, pp = config.tp, config.pp
    lo, hi = stage_layers(model.num_layers, pp, stage)
    out: list[ShardRange] = []
    if hi > lo:
        out.append(ShardRange("attn_qo", lo, hi, *_tp_slice(model.num_heads, tp, rank)))
        kv = model.num_kv_heads
        if tp <= kv:
            out.append(ShardRange("attn_kv", lo, hi, *_tp_slice(kv, tp, rank)))
        else:  # vLLM replicates KV heads: tp // kv ranks share each one
            head = rank * kv // tp
            out.append(ShardRange("attn_kv", lo, hi, head, head + 1))
        out.append(ShardRange("mlp", lo, hi, *_tp_slice(model.intermediate_size, tp, rank)))
        out.append(ShardRange("layer_rep", lo, hi, 0, 1))
    vocab = _tp_slice(model.vocab_size, tp, rank)
    first, last = stage == 0, stage == pp - 1
    if first or (last and model.tie_word_embeddings):
        out.append(ShardRange("embed", 0, 1, *vocab))
    if last and not model.tie_word_embeddings:
        out.append(ShardRange("lm_head", 0, 1, *vocab))
    if last:
        out.append(ShardRange("final_norm", 0, 1, 0, 1))
    return tuple(r for r in out if r.units > 0)


def replica_shards(model: ModelSpec, replica: Replica) -> dict[int, tuple[ShardRange, ...]]:
    """GPU id -> the ranges it holds, from the replica's GPU order (TP groups consecutive, stage by stage)."""
    tp = replica.config.tp
    return {gpu: gpu_shard(model, replica.config, i // tp, i % tp) for i, gpu in enumerate(replica.gpu_ids)}


def shard_bytes(model: ModelSpec, ranges: Iterable[ShardRange]) -> int:
    return sum(r.bytes(model) for r in ranges)


def overlap_bytes(model: ModelSpec, a: Iterable[ShardRange], b: Iterable[ShardRange]) -> int:
    """Bytes present in both sets of ranges (each set disjoint within itself)."""
    by_tensor: dict[str, list[ShardRange]] = {}
    for r in b:
        by_tensor.setdefault(r.tensor, []).append(r)
    total = 0
    for r in a:
        for s in by_tensor.get(r.tensor, ()):
            cut = r.intersect(s)
            if cut is not None:
                total += cut.bytes(model)
    return total

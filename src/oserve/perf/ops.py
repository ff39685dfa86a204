"""Per-operator work of one transformer layer (FLOPs and bytes) and the roofline that turns it into time.

Everything is vectorised over the number of tokens so the calibration can fit thousands of profile rows at once
and the cost model can tabulate a replica's iteration time over a grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ELEMENTWISE_OPS", "GEMM_OPS", "LayerShape", "roofline"]

GEMM_OPS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")
ELEMENTWISE_OPS = ("emb", "input_layernorm", "attn_rope", "post_attention_layernorm", "mlp_act", "add")


def roofline(
    flops: np.ndarray | float,
    bytes_: np.ndarray | float,
    peak_flops: float,
    peak_bytes_per_s: float,
    compute_eff: float | np.ndarray,
    memory_eff: float | np.ndarray,
    overhead_s: float,
    blend: float,
) -> np.ndarray:
    """Kernel time: a fixed launch/tail cost plus a smooth max of compute and memory time.

    ``blend`` is the exponent of the p-norm that joins the two limits (large = hard max); a p-norm rather than
    a max because measured GEMMs sit below both roofs where they meet (profiles in ``../shared/data``).
    """
    tc = np.asarray(flops, dtype=float) / (peak_flops * compute_eff)
    tm = np.asarray(bytes_, dtype=float) / (peak_bytes_per_s * memory_eff)
    return overhead_s + (tc**blend + tm**blend) ** (1.0 / blend)


@dataclass(frozen=True, slots=True)
class LayerShape:
    """A layer's dimensions as one tensor-parallel shard sees them (element counts, ``dtype_bytes`` per element)."""

    hidden: int
    q_per_gpu: int  # query width per shard (heads/tp * head_dim)
    kv_per_gpu: int  # key (= value) width per shard; KV heads replicate when tp > kv heads
    ffn_per_gpu: int  # MLP intermediate per shard (per expert for MoE)
    gated: bool = True
    dtype_bytes: int = 2
    num_experts: int = 1
    experts_per_token: int = 1

    @classmethod
    def of(
        cls,
        hidden: int,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
        ffn: int,
        tp: int,
        *,
        gated: bool = True,
        dtype_bytes: int = 2,
        num_experts: int = 1,
        experts_per_token: int = 1,
    ) -> LayerShape:
        return cls(
            hidden=hidden,
            q_per_gpu=num_heads // tp * head_dim,
            kv_per_gpu=max(1, num_kv_heads // tp) * head_dim,
            ffn_per_gpu=ffn // tp,
            gated=gated,
            dtype_bytes=dtype_bytes,
            num_experts=num_experts,
            experts_per_token=experts_per_token,
        )

    def gemm_dims(self, op: str) -> tuple[int, int]:
        """(K, N) of a GEMM op; M is the token count."""
        up = (2 if self.gated else 1) * self.ffn_per_gpu
        return {
            "attn_pre_proj": (self.hidden, self.q_per_gpu + 2 * self.kv_per_gpu),
            "attn_post_proj": (self.q_per_gpu, self.hidden),
            "mlp_up_proj": (self.hidden, up),
            "mlp_down_proj": (self.ffn_per_gpu, self.hidden),
        }[op]

    def gemm_work(self, op: str, tokens: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """FLOPs and HBM bytes of a GEMM op over ``tokens`` rows. MoE MLPs run each token through
        ``experts_per_token`` experts and read the weights of every expert that receives a token."""
        k, n = self.gemm_dims(op)
        return self.gemm_flops_bytes(np.asarray(tokens, dtype=float), k, n, op.startswith("mlp"))

    def gemm_flops_bytes(
        self, m: np.ndarray, k: np.ndarray | int, n: np.ndarray | int, mlp: np.ndarray | bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """``gemm_work`` for ``m`` rows of GEMMs of dims ``k`` x ``n`` (arrays broadcast: several ops at once);
        ``mlp`` marks the ones an MoE routes to experts."""
        b = self.dtype_bytes
        if self.num_experts > 1:
            routed = np.where(mlp, m * self.experts_per_token, m)
            hit = np.where(mlp, np.minimum(self.num_experts, np.maximum(routed, 1.0)), 1.0)
        else:
            routed, hit = m, 1.0
        return 2.0 * routed * k * n, b * (routed * (k + n) + hit * k * n)

    def elementwise_bytes(self, op: str, tokens: np.ndarray | float) -> np.ndarray:
        """HBM bytes moved by a memory-bound op over ``tokens`` rows."""
        m = np.asarray(tokens, dtype=float) * self.dtype_bytes
        width = {
            "emb": 2 * self.hidden,  # gather a row, write it
            "input_layernorm": 2 * self.hidden,
            "post_attention_layernorm": 2 * self.hidden,
            "attn_rope": 2 * (self.q_per_gpu + self.kv_per_gpu),
            "mlp_act": (3 if self.gated else 2) * self.ffn_per_gpu * max(1, self.experts_per_token),
            "add": 3 * self.hidden,
        }[op]
        return m * width

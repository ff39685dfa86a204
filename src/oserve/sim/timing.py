"""``StepTimer``: ``CostModel.iteration_time`` made cheap enough to call once per simulated batch.

``CostModel.iteration_time`` costs about 90 us (numpy on scalars). The simulator needs it for every step and
the sum over runs of decode steps, so the timer splits the iteration into the part that depends only on the
token and sequence counts (GEMMs, norms, all-reduces, LM head, PP sends: memoised per ``(tokens, logits)``
from the cost model itself) and the attention kernels, re-evaluated here in plain ``math`` and, for decode
runs, vectorised over the steps. ``tests/sim/test_sim_engine.py`` checks it equals ``iteration_time`` to 1e-12.
"""

from __future__ import annotations

import numpy as np

from oserve.perf.costmodel import BatchStats, CostModel

__all__ = ["StepTimer"]

# CostModel._attention_kernel joins compute and memory time with a p-norm of this exponent.
_ATTN_BLEND = 2.0


class StepTimer:
    """Seconds of one engine iteration from a batch's aggregates (the fields of ``BatchStats``)."""

    def __init__(self, cost_model: CostModel) -> None:
        cm = cost_model
        c, s = cm.calib, cm.shape
        self.cost_model = cm
        self._scale = cm.layers_per_stage * cm.replica.pp * c.stack.attention_scale
        self._pf = cm.gpu.bf16_flops * c.attn_compute_eff
        self._pb = cm.gpu.hbm_gb_per_s * 1e9 * c.attn_memory_eff
        self._ov = c.attn_overhead_s
        self._q, self._kv, self._bpe = s.q_per_gpu, s.kv_per_gpu, s.dtype_bytes
        self._base: dict[tuple[int, int], float] = {}

    def _attn(self, flops: float, bytes_: float) -> float:
        tc = flops / self._pf
        tm = bytes_ / self._pb
        return self._ov + (tc**_ATTN_BLEND + tm**_ATTN_BLEND) ** (1.0 / _ATTN_BLEND)

    def _decode_attn(self, seqs: int, context: float) -> float:
        q, kv, bpe = self._q, self._kv, self._bpe
        return self._attn(4.0 * q * context, bpe * (2 * kv * context + 2 * q * seqs))

    def base(self, tokens: int, logits: int) -> float:
        """Everything but attention for a batch of ``tokens`` tokens sampling ``logits`` sequences."""
        key = (tokens, logits)
        t = self._base.get(key)
        if t is None:
            b = BatchStats(decode_seqs=tokens, decode_context_tokens=0, logits_seqs=logits)
            t = self.cost_model.iteration_time(b) - self._scale * self._decode_attn(tokens, 0)
            self._base[key] = t
        return t

    def step_time(
        self,
        prefill_tokens: int,
        prefill_seqs: int,
        prefill_attn_pairs: float,
        prefill_kv_tokens: int,
        decode_seqs: int,
        decode_context_tokens: int,
    ) -> float:
        """``CostModel.iteration_time`` of the batch with these aggregates (0 for an empty batch)."""
        tokens = prefill_tokens + decode_seqs
        if tokens == 0:
            return 0.0
        attn = 0.0
        if prefill_seqs:
            q, kv, bpe = self._q, self._kv, self._bpe
            attn += self._attn(
                4.0 * q * prefill_attn_pairs,
                bpe * (prefill_tokens * 2 * q + 2 * kv * prefill_kv_tokens),
            )
        if decode_seqs:
            attn += self._decode_attn(decode_seqs, decode_context_tokens)
        return self.base(tokens, prefill_seqs + decode_seqs) + self._scale * attn

    def decode_time(self, seqs: int, context_tokens: int) -> float:
        """One pure-decode step of ``seqs`` sequences attending to ``context_tokens`` tokens in all."""
        return self.base(seqs, seqs) + self._scale * self._decode_attn(seqs, context_tokens)

    def decode_run(self, seqs: int, context_tokens: int, steps: int) -> np.ndarray:
        """Times of ``steps`` consecutive pure-decode steps of ``seqs`` sequences: the context grows by ``seqs``
        tokens a step, nothing else changes (vectorised; the run's p-norm attention is not affine in context)."""
        q, kv, bpe = self._q, self._kv, self._bpe
        ctx = context_tokens + seqs * np.arange(steps, dtype=np.float64)
        tc = (4.0 * q / self._pf) * ctx
        tm = (bpe * (2 * kv * ctx + 2 * q * seqs)) / self._pb
        attn = self._ov + np.sqrt(tc * tc + tm * tm)
        return self.base(seqs, seqs) + self._scale * attn

"""``StepTimer``: ``CostModel.iteration_time`` made cheap enough to call once per simulated batch.

``CostModel.iteration_time`` costs about 90 us (numpy on scalars). The simulator needs it for every step and
the sum over runs of decode steps, so the timer splits the iteration into the part that depends only on the
token and sequence counts (GEMMs, norms, all-reduces, LM head, PP sends: memoised per ``(tokens, logits)``
from the cost model itself) and the attention kernels, through the cost model's own arithmetic-only attention
methods (floats per step, numpy arrays over a run of decode steps). ``tests/sim/test_sim_engine.py`` checks it equals ``iteration_time`` to 1e-12.
"""

from __future__ import annotations

import numpy as np

from oserve.perf.costmodel import BatchStats, CostModel

__all__ = ["StepTimer"]


class StepTimer:
    """Seconds of one engine iteration from a batch's aggregates (the fields of ``BatchStats``)."""

    def __init__(self, cost_model: CostModel) -> None:
        self.cost_model = cost_model
        self._scale = cost_model.attention_layers_scale
        self._kernel = cost_model.attention_kernel_s
        # decode attention inlined: the cost model's decode_attention_kernel_s(*decode_attention_work(..)), the
        # same operations in the same order on the same constants (bit-identical; tests/sim/test_sim_engine.py)
        (
            self._flops_per_ctx,
            self._bytes_per_ctx,
            self._bytes_per_seq,
            self._elem_bytes,
            self._dec_peak_flops,
            self._dec_peak_bytes,
            self._dec_overhead_s,
            self._dec_scale,
        ) = cost_model.decode_attention_terms
        self._base: dict[tuple[int, int], float] = {}
        self._decode_base: dict[int, float] = {}  # base(seqs, seqs), the pure-decode steps' lookup

    def _decode_attn(self, seqs: int, context: float) -> float:
        """``decode_attention_kernel_s(*decode_attention_work(seqs, context))`` (floats or arrays)."""
        tc = self._flops_per_ctx * context / self._dec_peak_flops
        tm = (
            self._elem_bytes
            * (self._bytes_per_ctx * context + self._bytes_per_seq * seqs)
            / self._dec_peak_bytes
        )
        return self._dec_scale * (self._dec_overhead_s + (tc * tc + tm * tm) ** 0.5)

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
            attn += self._kernel(
                *self.cost_model.prefill_attention_work(prefill_tokens, prefill_attn_pairs, prefill_kv_tokens)
            )
        if decode_seqs:
            attn += self._decode_attn(decode_seqs, decode_context_tokens)
        return self.base(tokens, prefill_seqs + decode_seqs) + self._scale * attn

    def step_times(
        self,
        prefill_tokens: np.ndarray,
        prefill_seqs: np.ndarray,
        prefill_attn_pairs: np.ndarray,
        prefill_kv_tokens: np.ndarray,
        decode_seqs: int,
        decode_context_tokens: int,
    ) -> np.ndarray:
        """``step_time`` of many batches (arrays of their prefill aggregates, each > 0 tokens) beside the same
        decode batch, vectorised."""
        tokens = np.asarray(prefill_tokens, dtype=np.float64)
        seqs = np.asarray(prefill_seqs, dtype=np.int64)
        cm = self.cost_model
        base = cm.iteration_times_without_attention(tokens + decode_seqs, seqs + decode_seqs)
        attn = np.where(
            seqs > 0,
            self._kernel(*cm.prefill_attention_work(tokens, prefill_attn_pairs, prefill_kv_tokens)),
            0.0,
        )
        if decode_seqs:
            attn = attn + self._decode_attn(decode_seqs, decode_context_tokens)
        return base + self._scale * attn

    def prefill_times(
        self,
        chunk_tokens: np.ndarray,
        context_before: np.ndarray,
        decode_seqs: int,
        decode_context_tokens: int,
    ) -> np.ndarray:
        """``step_time`` of many single-chunk prefills (arrays), each beside the same decode batch (vectorised)."""
        chunk = np.asarray(chunk_tokens, dtype=np.float64)
        before = np.asarray(context_before, dtype=np.float64)
        pairs = chunk * (before + (chunk + 1) / 2)
        return self.step_times(
            chunk, np.ones(len(chunk), np.int64), pairs, before + chunk, decode_seqs, decode_context_tokens
        )

    def decode_time(self, seqs: int, context_tokens: int) -> float:
        """One pure-decode step of ``seqs`` sequences attending to ``context_tokens`` tokens in all."""
        base = self._decode_base.get(seqs)
        if base is None:
            base = self._decode_base[seqs] = self.base(seqs, seqs)
        tc = self._flops_per_ctx * context_tokens / self._dec_peak_flops
        tm = (
            self._elem_bytes
            * (self._bytes_per_ctx * context_tokens + self._bytes_per_seq * seqs)
            / self._dec_peak_bytes
        )
        return base + self._scale * (self._dec_scale * (self._dec_overhead_s + (tc * tc + tm * tm) ** 0.5))

    def decode_run(self, seqs: int, context_tokens: int, steps: int) -> np.ndarray:
        """Times of ``steps`` consecutive pure-decode steps of ``seqs`` sequences: the context grows by ``seqs``
        tokens a step, nothing else changes (vectorised; the run's p-norm attention is not affine in context)."""
        ctx = context_tokens + seqs * np.arange(steps, dtype=np.float64)
        base = self._decode_base.get(seqs)
        if base is None:
            base = self._decode_base[seqs] = self.base(seqs, seqs)
        return base + self._scale * self._decode_attn(seqs, ctx)

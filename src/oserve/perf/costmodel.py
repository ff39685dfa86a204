"""``CostModel``: time of one engine iteration and KV-cache capacity for a (model, replica config).

An iteration runs one batch through every layer: the non-attention ops (GEMMs, norms, activation) on all its
tokens, attention per sequence (prefill chunks attend to their context plus themselves, decode steps read their
whole KV cache), two tensor-parallel all-reduces per layer, the LM head on the sequences that emit a token, and
for pipeline parallelism one activation send per stage boundary. Times come from datasheet rooflines scaled by
efficiencies fitted to measured profiles (:mod:`oserve.perf.calibration`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from oserve.perf.calibration import Calibration, GpuCalibration, builtin_calibration
from oserve.perf.ops import ELEMENTWISE_OPS, GEMM_OPS, LayerShape, roofline
from oserve.spec.model import ModelSpec
from oserve.spec.replica import ReplicaConfig

__all__ = ["BatchStats", "CostModel", "MemoryPlan"]

GIB = 1024**3


@dataclass(frozen=True, slots=True)
class BatchStats:
    """The aggregates of a batch that its iteration time depends on (what the simulator keeps running sums of).

    ``prefill_attn_pairs`` is sum over prefill chunks of chunk * (context_before + (chunk + 1) / 2): the
    (query, key) pairs causal attention computes; ``prefill_kv_tokens`` is sum of (context_before + chunk).
    """

    prefill_tokens: int = 0
    prefill_seqs: int = 0
    prefill_attn_pairs: float = 0.0
    prefill_kv_tokens: int = 0
    decode_seqs: int = 0
    decode_context_tokens: int = 0  # sum of context lengths the decode steps attend to
    logits_seqs: int | None = None  # sequences sampling a token this step; default prefill_seqs + decode_seqs

    @classmethod
    def of(cls, prefill: Sequence[tuple[int, int]] = (), decode_contexts: Sequence[int] = ()) -> BatchStats:
        """From prefill chunks ``(chunk_tokens, context_before)`` and decode context lengths."""
        chunks = np.asarray([c for c, _ in prefill], dtype=float)
        before = np.asarray([b for _, b in prefill], dtype=float)
        return cls(
            prefill_tokens=int(chunks.sum()),
            prefill_seqs=len(prefill),
            prefill_attn_pairs=float((chunks * (before + (chunks + 1) / 2)).sum()),
            prefill_kv_tokens=int((before + chunks).sum()),
            decode_seqs=len(decode_contexts),
            decode_context_tokens=int(np.sum(decode_contexts)) if len(decode_contexts) else 0,
        )

    @property
    def num_tokens(self) -> int:
        return self.prefill_tokens + self.decode_seqs


@dataclass(frozen=True, slots=True)
class MemoryPlan:
    """Per-GPU memory budget of a replica (bytes); the KV cache gets what is left."""

    usable_bytes: int
    weight_bytes: int
    activation_bytes: int
    headroom_bytes: int
    kv_bytes_per_token: int  # on the most loaded GPU
    kv_capacity_tokens: int
    max_model_len: int  # the longest sequence the replica must hold (vLLM refuses to start otherwise)

    @property
    def fits(self) -> bool:
        return self.kv_capacity_tokens >= self.max_model_len


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


class CostModel:
    """Iteration time and KV capacity of one replica config serving one model.

    ``headroom_gib`` is memory kept free per GPU besides weights, activations and KV (CUDA graphs, NCCL buffers,
    allocator slack); vLLM's ``gpu_memory_utilization`` is taken from the replica config.
    """

    def __init__(
        self,
        model: ModelSpec,
        replica: ReplicaConfig,
        calibration: Calibration | None = None,
        *,
        headroom_gib: float = 1.5,
    ) -> None:
        self.model = model
        self.replica = replica
        self.gpu = replica.gpu
        self.calib: GpuCalibration = (calibration or builtin_calibration()).for_gpu(replica.gpu)
        self.headroom_gib = headroom_gib
        m, tp = model, replica.tp
        self.shape = LayerShape.of(
            m.hidden_size,
            m.num_heads,
            m.num_kv_heads,
            m.head_dim,
            m.intermediate_size,
            tp,
            gated=m.gated_mlp,
            dtype_bytes=m.dtype_bytes,
            num_experts=m.num_experts,
            experts_per_token=m.experts_per_token,
        )
        self.layers_per_stage = -(-m.num_layers // replica.pp)
        self._peak_b = self.gpu.hbm_gb_per_s * 1e9
        c = self.calib
        self._attn_peak_flops = self.gpu.bf16_flops * c.attn_compute_eff
        self._attn_peak_bytes = self._peak_b * c.attn_memory_eff
        self._dec_peak_flops = self.gpu.bf16_flops * _or(c.decode_attn_compute_eff, c.attn_compute_eff)
        self._dec_peak_bytes = self._peak_b * _or(c.decode_attn_memory_eff, c.attn_memory_eff)
        self._dec_overhead_s = _or(c.decode_attn_overhead_s, c.attn_overhead_s)
        self._dec_scale = c.stack.decode_attention_scale
        self._lm_head: dict[int, float] = {}
        s = self.calib.stack
        self._compute_eff = {op: e / s.compute_scale for op, e in self.calib.gemm_compute_eff.items()}
        self._memory_eff = {op: e / s.memory_scale for op, e in self.calib.gemm_memory_eff.items()}
        self._elem_eff = {op: e / s.memory_scale for op, e in self.calib.elem_memory_eff.items()}
        # the GEMMs as columns (evaluated together) and the memory-bound ops as one line in the token count
        dims = np.array([self.shape.gemm_dims(op) for op in GEMM_OPS], dtype=np.float64)
        self._gemm_k, self._gemm_n = dims[:, :1], dims[:, 1:]
        self._gemm_mlp = np.array([[op.startswith("mlp")] for op in GEMM_OPS])
        self._gemm_compute_eff = np.array([[self._compute_eff[op]] for op in GEMM_OPS])
        self._gemm_memory_eff = np.array([[self._memory_eff[op]] for op in GEMM_OPS])
        # an op the calibration has no efficiency for is fused into its neighbours (aiconfigurator's rotary)
        layer_elem = [op for op in ELEMENTWISE_OPS if op != "emb" and op in self._elem_eff]
        self._elem_fixed_s = len(layer_elem) * self.calib.elem_overhead_s
        self._elem_s_per_token = sum(
            float(self.shape.elementwise_bytes(op, 1.0)) / (self._peak_b * self._elem_eff[op])
            for op in layer_elem
        )
        # ops with a measured floor are timed one by one (the floor binds on a few tokens); the rest as one line
        floored = [op for op in layer_elem if self.calib.elem_floor_s.get(op, 0.0) > 0.0]
        self._elem_floor = np.array([[self.calib.elem_floor_s[op]] for op in floored])
        self._elem_floored_per_token = np.array(
            [
                [float(self.shape.elementwise_bytes(op, 1.0)) / (self._peak_b * self._elem_eff[op])]
                for op in floored
            ]
        )
        self._elem_line_fixed_s = (len(layer_elem) - len(floored)) * self.calib.elem_overhead_s
        self._elem_line_per_token = self._elem_s_per_token - float(self._elem_floored_per_token.sum())
        self.memory = self._memory_plan()
        # memos of the parts of an iteration that depend on the token count or the sampled sequences alone
        # (the simulator asks for thousands of distinct batches, built from far fewer of each)
        self._token_terms: dict[int, tuple[float, float, float]] = {}

    # -- memory ---------------------------------------------------------------------------------------------
    def _memory_plan(self) -> MemoryPlan:
        m, r = self.model, self.replica
        per_layer = m.params_per_layer / r.tp
        embed = m.vocab_size * m.hidden_size / r.tp  # vocab-parallel, on the first (and last) stage
        stage_params = self.layers_per_stage * per_layer + embed * (
            1 if m.tie_word_embeddings or r.pp > 1 else 2
        )
        weight_bytes = int(stage_params * m.dtype_bytes)
        tokens = r.max_num_batched_tokens
        act_width = 4 * m.hidden_size + 3 * self.shape.ffn_per_gpu * m.experts_per_token
        activation = int(
            tokens * act_width * m.dtype_bytes + min(tokens, r.max_num_seqs) * m.vocab_size / r.tp * 4
        )
        usable = int(self.gpu.memory_bytes * r.gpu_memory_utilization)
        headroom = int(self.headroom_gib * GIB)
        kv_per_token = 2 * self.layers_per_stage * self.shape.kv_per_gpu * m.dtype_bytes
        free = usable - weight_bytes - activation - headroom
        capacity = max(0, free // kv_per_token // r.block_size * r.block_size)
        # vLLM's max_model_len: the one set, else the model's context capped by what one PP virtual engine's
        # share of the KV cache holds (a cache too small for one block fails to start)
        share = capacity // r.pp // r.block_size * r.block_size
        max_len = r.max_model_len or min(m.max_position_embeddings, max(share, r.block_size))
        return MemoryPlan(usable, weight_bytes, activation, headroom, kv_per_token, int(capacity), max_len)

    @property
    def kv_capacity_tokens(self) -> int:
        return self.memory.kv_capacity_tokens

    @property
    def unfit_reason(self) -> str | None:
        """Why vLLM would refuse this replica (None when it runs)."""
        m, tp = self.model, self.replica.tp
        if m.num_heads % tp:
            return f"{m.num_heads} attention heads are not divisible by tp={tp}"
        if m.num_layers < self.replica.pp:
            return f"{m.num_layers} layers cannot fill pp={self.replica.pp} stages"
        if not self.memory.fits:
            return (
                f"KV cache holds {self.memory.kv_capacity_tokens:,} tokens per replica, fewer than "
                f"max_model_len={self.memory.max_model_len:,} (weights take "
                f"{self.memory.weight_bytes / GIB:.1f} GiB of {self.memory.usable_bytes / GIB:.1f} GiB per GPU)"
            )
        return None

    @property
    def fits(self) -> bool:
        return self.unfit_reason is None

    # -- time -----------------------------------------------------------------------------------------------
    def _dense_time(self, tokens: np.ndarray) -> np.ndarray:
        """Non-attention time of one layer on ``tokens`` rows (GEMMs and memory-bound ops, no emb)."""
        c, g = self.calib, self.gpu
        m = np.asarray(tokens, dtype=float)
        flops, bytes_ = self.shape.gemm_flops_bytes(
            m.reshape(1, -1), self._gemm_k, self._gemm_n, self._gemm_mlp
        )
        gemms = roofline(
            flops,
            bytes_,
            g.bf16_flops,
            self._peak_b,
            self._gemm_compute_eff,
            self._gemm_memory_eff,
            c.gemm_overhead_s,
            c.gemm_blend,
        ).sum(axis=0)
        flat = m.reshape(-1)
        if not len(self._elem_floor):
            return (gemms + self._elem_fixed_s + flat * self._elem_s_per_token).reshape(m.shape)
        floored = np.maximum(
            self._elem_floor, self.calib.elem_overhead_s + self._elem_floored_per_token * flat.reshape(1, -1)
        ).sum(axis=0)
        return (gemms + self._elem_line_fixed_s + flat * self._elem_line_per_token + floored).reshape(m.shape)

    # -- attention: plain arithmetic, so the same code serves floats (the simulator's steps) and numpy arrays
    # (its runs of decode steps); compute and memory time joined by a 2-norm as in `roofline`.
    def attention_kernel_s(self, flops: Any, bytes_: Any) -> Any:
        """One attention kernel of one layer from its FLOPs and HBM bytes (floats or arrays)."""
        tc = flops / self._attn_peak_flops
        tm = bytes_ / self._attn_peak_bytes
        return self.calib.attn_overhead_s + (tc * tc + tm * tm) ** 0.5

    def decode_attention_kernel_s(self, flops: Any, bytes_: Any) -> Any:
        """One decode attention kernel of one layer (its own fitted efficiencies and scale; floats or arrays)."""
        tc = flops / self._dec_peak_flops
        tm = bytes_ / self._dec_peak_bytes
        return self._dec_scale * (self._dec_overhead_s + (tc * tc + tm * tm) ** 0.5)

    def prefill_attention_work(self, tokens: Any, attn_pairs: Any, kv_tokens: Any) -> tuple[Any, Any]:
        """(FLOPs, bytes) of causal prefill attention: ``attn_pairs`` (query, key) pairs, ``kv_tokens`` read."""
        q, kv, bpe = self.shape.q_per_gpu, self.shape.kv_per_gpu, self.shape.dtype_bytes
        return 4.0 * q * attn_pairs, bpe * (tokens * 2 * q + 2 * kv * kv_tokens)

    def decode_attention_work(self, seqs: Any, context_tokens: Any) -> tuple[Any, Any]:
        """(FLOPs, bytes) of one decode step of ``seqs`` sequences reading ``context_tokens`` KV tokens in all."""
        q, kv, bpe = self.shape.q_per_gpu, self.shape.kv_per_gpu, self.shape.dtype_bytes
        return 4.0 * q * context_tokens, bpe * (2 * kv * context_tokens + 2 * q * seqs)

    @property
    def decode_attention_terms(self) -> tuple[float, int, int, int, float, float, float, float]:
        """The constants of ``decode_attention_kernel_s(*decode_attention_work(seqs, context))``, in the order
        the two use them: ``4.0 * q``, ``2 * kv``, ``2 * q``, bytes per element, peak FLOP/s and bytes/s,
        overhead, scale (``sim.timing`` inlines the same arithmetic on them)."""
        q, kv, bpe = self.shape.q_per_gpu, self.shape.kv_per_gpu, self.shape.dtype_bytes
        return (
            4.0 * q,
            2 * kv,
            2 * q,
            bpe,
            self._dec_peak_flops,
            self._dec_peak_bytes,
            self._dec_overhead_s,
            self._dec_scale,
        )

    @property
    def attention_layers_scale(self) -> float:
        """Multiplier from one layer's attention kernels to the whole replica's (layers x stages x stack)."""
        return self.layers_per_stage * self.replica.pp * self.calib.stack.attention_scale

    def attention_time(self, b: BatchStats) -> float:
        """Attention of one layer for the batch: prefill (compute-bound) and decode (KV-read-bound) kernels."""
        t = 0.0
        if b.prefill_seqs:
            t += self.attention_kernel_s(
                *self.prefill_attention_work(b.prefill_tokens, b.prefill_attn_pairs, b.prefill_kv_tokens)
            )
        if b.decode_seqs:
            t += self.decode_attention_kernel_s(
                *self.decode_attention_work(b.decode_seqs, b.decode_context_tokens)
            )
        return float(t) * self.calib.stack.attention_scale

    def lm_head_time(self, seqs: int) -> float:
        """LM head GEMM (and the logits gather under TP) for ``seqs`` sequences sampling a token."""
        cached = self._lm_head.get(seqs)
        if cached is None:
            cached = self._lm_head[seqs] = self._lm_head_time(seqs)
        return cached

    def _lm_head_time(self, seqs: int) -> float:
        m, c, g = self.model, self.calib, self.gpu
        n = m.vocab_size / self.replica.tp
        flops = 2.0 * seqs * m.hidden_size * n
        bytes_ = m.dtype_bytes * (seqs * m.hidden_size + m.hidden_size * n + seqs * n)
        gemm = roofline(
            flops,
            bytes_,
            g.bf16_flops,
            self._peak_b,
            self._compute_eff["mlp_up_proj"],
            self._memory_eff["mlp_up_proj"],
            c.gemm_overhead_s,
            c.gemm_blend,
        )
        gather = c.allreduce_s(seqs * n * 4, self.replica.tp) if self.replica.tp > 1 else 0.0
        return float(gemm) + float(gather)

    def _layer_terms(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For ``tokens`` tokens (float or array): one layer's dense time, its two TP all-reduces, the embedding."""
        c = self.calib
        dense = self._dense_time(tokens)
        allreduce = np.zeros_like(dense)
        if self.replica.tp > 1:
            allreduce = 2.0 * c.allreduce_s(
                tokens * self.model.hidden_size * self.model.dtype_bytes, self.replica.tp
            )
        emb = c.elem_overhead_s + self.shape.elementwise_bytes("emb", tokens) / (
            self._peak_b * self._elem_eff.get("emb", 1.0)
        )
        emb = np.maximum(emb, c.elem_floor_s.get("emb", 0.0))
        return dense, allreduce, emb

    def _stage_without_attention(self, tokens: np.ndarray, logits: int | np.ndarray) -> np.ndarray:
        """The slowest stage's time for batches of ``tokens`` tokens (array) sampling ``logits`` sequences (one
        count or one per batch), attention excluded (dense layers, TP all-reduces, embedding, LM head)."""
        dense, allreduce, emb = self._layer_terms(tokens)
        if np.ndim(logits):
            flat = [self.lm_head_time(max(1, int(n))) for n in np.asarray(logits).ravel()]
            head = np.array(flat).reshape(np.shape(logits))
        else:
            head = self.lm_head_time(max(1, int(logits)))
        # with pp > 1 the first stage embeds and the last samples: the slowest stage carries the larger end
        ends = np.maximum(emb, head) if self.replica.pp > 1 else emb + head
        return self.layers_per_stage * (dense + allreduce) + ends

    def stage_time(self, batch: BatchStats) -> float:
        """Time of the slowest pipeline stage for ``batch`` (the whole model when pp == 1), overhead excluded."""
        tokens = batch.num_tokens
        if tokens == 0:
            return 0.0
        terms = self._token_terms.get(tokens)
        if terms is None:
            terms = self._token_terms[tokens] = self._terms_of(tokens)
        dense, allreduce, emb = terms
        layer = dense + self.attention_time(batch)
        if self.replica.tp > 1:
            layer += allreduce
        logits = max(
            1, batch.logits_seqs if batch.logits_seqs is not None else batch.prefill_seqs + batch.decode_seqs
        )
        head = self.lm_head_time(logits)
        # with pp > 1 the first stage embeds and the last samples: the slowest stage carries the larger end
        ends = max(float(emb), head) if self.replica.pp > 1 else float(emb) + head
        return self.layers_per_stage * layer + ends

    def _terms_of(self, tokens: int) -> tuple[float, float, float]:
        """``_layer_terms`` of one token count, as floats (memoised by ``stage_time``)."""
        dense, allreduce, emb = self._layer_terms(np.asarray(float(tokens)))
        return float(dense), float(allreduce), float(emb)

    def iteration_times_without_attention(self, tokens: np.ndarray, logits: int | np.ndarray) -> np.ndarray:
        """``iteration_time`` minus its attention kernels, for many token counts (array, each > 0) that sample
        ``logits`` sequences (one count, or one per batch): the part of a step that depends only on its size."""
        tokens = np.asarray(tokens, dtype=np.float64)
        pp = self.replica.pp
        t = self._stage_without_attention(tokens, logits) * pp + self.calib.stack.iteration_overhead_s
        if pp > 1:
            t = t + (pp - 1) * self.calib.p2p_s(
                tokens * self.model.hidden_size * self.model.dtype_bytes, inter_node=False
            )
        return t

    def iteration_time(self, batch: BatchStats) -> float:
        """Seconds for ``batch`` to pass through the replica once (all stages, sends and engine overhead)."""
        if batch.num_tokens == 0:
            return 0.0
        pp = self.replica.pp
        t = self.stage_time(batch) * pp + self.calib.stack.iteration_overhead_s
        if pp > 1:
            act = batch.num_tokens * self.model.hidden_size * self.model.dtype_bytes
            t += (pp - 1) * self.calib.p2p_s(act, inter_node=False)
        return t

    # -- conveniences matching the measurement CSV contract --------------------------------------------------
    def prefill_time(self, num_seqs: int, length: int) -> float:
        """One forward pass over ``num_seqs`` prompts of ``length`` tokens each."""
        return self.iteration_time(BatchStats.of(prefill=[(length, 0)] * num_seqs))

    def decode_time(self, num_seqs: int, context: int) -> float:
        """One decode step of ``num_seqs`` sequences with ``context`` tokens of KV each."""
        return self.iteration_time(BatchStats(decode_seqs=num_seqs, decode_context_tokens=num_seqs * context))

    def throughput_bound_rps(self, prompt_tokens: float, output_tokens: float) -> float:
        """Requests/s one replica sustains on requests of this shape with no latency target: the largest decode
        batch the KV cache and ``max_num_seqs`` allow, plus each request's own prefill. An upper bound for
        comparing configs; the planner's capacity adds the SLOs."""
        if not self.fits:
            return 0.0
        context = prompt_tokens + output_tokens / 2.0
        batch = int(
            min(self.replica.max_num_seqs, self.kv_capacity_tokens // max(1.0, prompt_tokens + output_tokens))
        )
        if batch < 1:
            return 0.0
        step = self.decode_time(batch, int(context))
        per_request = (
            self.prefill_time(1, max(1, int(prompt_tokens))) + max(0.0, output_tokens - 1) * step / batch
        )
        return 1.0 / per_request

    def breakdown(self, batch: BatchStats) -> dict[str, float]:
        """Where the time of one iteration goes (seconds, whole replica), for reports and docs."""
        tokens = np.asarray(float(batch.num_tokens))
        n = self.layers_per_stage * self.replica.pp
        out = {
            "dense_layers": n * float(self._dense_time(tokens)),
            "attention": n * self.attention_time(batch),
        }
        if self.replica.tp > 1:
            out["tp_allreduce"] = (
                2
                * n
                * float(
                    self.calib.allreduce_s(
                        batch.num_tokens * self.model.hidden_size * self.model.dtype_bytes, self.replica.tp
                    )
                )
            )
        out["total"] = self.iteration_time(batch)
        out["other"] = out["total"] - sum(v for k, v in out.items() if k != "total")
        return out

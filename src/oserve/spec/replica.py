"""``ReplicaConfig``: one engine replica's shape (GPU type, TP, PP) and engine knobs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from oserve.errors import SpecError
from oserve.spec.gpu import GpuSpec

__all__ = ["ROLES", "ReplicaConfig", "Role"]

#: what a replica runs: whole requests, or one phase of a disaggregated prefill/decode pool
Role = Literal["aggregated", "prefill", "decode"]
ROLES: tuple[Role, ...] = ("aggregated", "prefill", "decode")


@dataclass(frozen=True, slots=True)
class ReplicaConfig:
    """A replica of ``tp * pp`` GPUs of one type. TP stays inside a node; PP stages may span nodes.

    Engine knobs follow vLLM's names: ``max_num_seqs`` running sequences, ``max_num_batched_tokens`` per step
    (the chunked-prefill token budget), ``block_size`` tokens per KV block, ``enable_prefix_caching`` vLLM's
    automatic prefix caching (on by default, as in vLLM v1). ``role`` is ``aggregated`` (prefill and decode on the
    replica) or one phase of a disaggregated pool: a ``prefill`` replica computes the prompt and the first token
    and hands the KV cache to a ``decode`` replica (``sim.disagg``).
    """

    gpu: GpuSpec
    tp: int = 1
    pp: int = 1
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    block_size: int = 16
    gpu_memory_utilization: float = 0.90
    max_model_len: int | None = None  # None: the model's context, capped by the KV cache (CostModel.memory)
    enable_prefix_caching: bool = True
    role: Role = "aggregated"

    def __post_init__(self) -> None:
        if self.tp < 1 or self.tp & (self.tp - 1):
            raise SpecError(f"tp must be a power of two >= 1, got {self.tp}")
        if self.pp < 1:
            raise SpecError(f"pp must be >= 1, got {self.pp}")
        if self.max_num_seqs < 1 or self.max_num_batched_tokens < 1 or self.block_size < 1:
            raise SpecError("max_num_seqs, max_num_batched_tokens and block_size must be positive")
        if self.max_model_len is not None and self.max_model_len < 1:
            raise SpecError(f"max_model_len must be positive, got {self.max_model_len}")
        if self.role not in ROLES:
            raise SpecError(f"role must be one of {', '.join(ROLES)}, got {self.role!r}")
        if not 0.05 <= self.gpu_memory_utilization <= 1.0:
            raise SpecError(f"gpu_memory_utilization must be in [0.05, 1], got {self.gpu_memory_utilization}")

    @property
    def num_gpus(self) -> int:
        return self.tp * self.pp

    @property
    def label(self) -> str:
        """Short human label, e.g. ``H100-SXM-80GB:tp4``, ``A100-80GB:tp2pp2`` or ``H100-SXM-80GB:tp2:prefill``."""
        pp = f"pp{self.pp}" if self.pp > 1 else ""
        role = "" if self.role == "aggregated" else f":{self.role}"
        return f"{self.gpu.name}:tp{self.tp}{pp}{role}"

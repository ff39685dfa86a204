"""Latency targets (SLOs) the planner plans for and the simulator scores against.

``default_slo`` scales the model's unloaded latency on the cluster's default replica shape (the smallest TP that
fits, as vLLM would deploy it): TTFT = ``scale`` x the prefill of a 4,096-token prompt, TPOT = ``scale`` x one
decode step of a single 2,048-token sequence. Scale 5 is the usual "SLO scale" of DistServe-style evaluations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from oserve.errors import ConfigError
from oserve.perf import Calibration, CostModel
from oserve.planner.baselines import vllm_default_deployment
from oserve.spec import Cluster, ModelSpec

__all__ = ["DEFAULT_SLO_SCALE", "Slo", "default_slo"]

DEFAULT_SLO_SCALE = 5.0
_TTFT_REF_PROMPT_TOKENS = 4096
_TPOT_REF_CONTEXT_TOKENS = 2048


@dataclass(frozen=True, slots=True)
class Slo:
    """Per-request targets: time to first token, time per output token after the first, optional end-to-end."""

    ttft_s: float
    tpot_s: float
    e2e_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("ttft_s", "tpot_s", "e2e_s"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigError(
                    f"SLO {name.removesuffix('_s')} must be a positive number of seconds, got {value}"
                )

    def to_dict(self) -> dict[str, float]:
        """The simulator's ``slo`` mapping (``ttft_s``, ``tpot_s`` and ``e2e_s`` when set)."""
        out = {"ttft_s": self.ttft_s, "tpot_s": self.tpot_s}
        if self.e2e_s is not None:
            out["e2e_s"] = self.e2e_s
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Slo:
        """From ``{"ttft_s": .., "tpot_s": .., "e2e_s": ..}`` (the ``_s`` suffix optional)."""
        values = {str(k).removesuffix("_s"): v for k, v in data.items()}
        unknown = set(values) - {"ttft", "tpot", "e2e"}
        if unknown:
            raise ConfigError(f"unknown SLO key(s) {sorted(unknown)}; use ttft, tpot, e2e")
        if "ttft" not in values or "tpot" not in values:
            raise ConfigError("an SLO needs both ttft and tpot (seconds)")
        try:
            e2e = values.get("e2e")
            return cls(float(values["ttft"]), float(values["tpot"]), None if e2e is None else float(e2e))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"SLO values must be numbers: {exc}") from exc

    def describe(self) -> str:
        text = f"TTFT <= {self.ttft_s:.3g} s, TPOT <= {self.tpot_s * 1000:.3g} ms"
        return text + (f", E2E <= {self.e2e_s:.3g} s" if self.e2e_s is not None else "")


def default_slo(
    model: ModelSpec,
    cluster: Cluster,
    calibration: Calibration | None = None,
    *,
    scale: float = DEFAULT_SLO_SCALE,
) -> Slo:
    """``scale`` x the unloaded latency on the vLLM-default shape of the cluster (see the module docstring)."""
    config = vllm_default_deployment(model, cluster, calibration).replicas[0].config
    cm = CostModel(model, config, calibration)
    ttft = scale * cm.prefill_time(1, _TTFT_REF_PROMPT_TOKENS)
    tpot = scale * cm.decode_time(1, _TPOT_REF_CONTEXT_TOKENS)
    # round up to readable values: 10 ms steps for TTFT, 1 ms for TPOT
    return Slo(math.ceil(ttft * 100) / 100, math.ceil(tpot * 1000) / 1000)

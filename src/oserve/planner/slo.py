"""Latency targets (SLOs) the planner plans for and the simulator scores against.

``default_slo`` scales the model's unloaded latency on the cluster's default replica shape (the smallest TP that
fits, as vLLM would deploy it): TTFT = ``scale`` x the prefill of a 4,096-token prompt, plus ``scale`` x the
per-token prefill time at the model's context length for every prompt token (length-aware, so a long prompt an
idle replica prefills in time never fails planning), TPOT = ``scale`` x one decode step of a single 2,048-token
sequence. Scale 5 is the usual "SLO scale" of DistServe-style evaluations.

Spellings (``parse_slo_targets``): ``ttft=1,tpot=0.05,e2e=600``; a length-aware TTFT ``ttft=0.5+0.0002/tok``
(base seconds plus seconds per prompt token).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from oserve.errors import ConfigError
from oserve.perf import Calibration, CostModel
from oserve.planner.baselines import vllm_default_deployment
from oserve.spec import Cluster, ModelSpec

__all__ = ["DEFAULT_SLO_SCALE", "Slo", "default_slo", "parse_slo_targets"]

DEFAULT_SLO_SCALE = 5.0
_TTFT_REF_PROMPT_TOKENS = 4096
_TPOT_REF_CONTEXT_TOKENS = 2048
_SLO_KEYS = ("ttft", "tpot", "e2e")
_SLO_SYNTAX = "ttft=S[+S/tok],tpot=S[,e2e=S] (seconds)"


def _seconds(key: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"SLO {key}={text!r}: not a number of seconds; expected {_SLO_SYNTAX}") from None
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"SLO {key}={text!r}: must be a positive finite number of seconds")
    return value


def parse_slo_targets(text: str) -> dict[str, float]:
    """``ttft=0.5+0.0002/tok,tpot=0.05,e2e=600`` -> ``{"ttft_s": 0.5, "ttft_per_token_s": 0.0002, ...}``;
    ``auto`` or empty -> ``{}`` (the caller fills the default). Raises ``ConfigError`` naming the bad part."""
    out: dict[str, float] = {}
    if text.strip().lower() in ("", "auto"):
        return out
    for part in (p.strip() for p in text.split(",")):
        if not part:
            raise ConfigError(f"SLO {text!r}: empty target between commas; expected {_SLO_SYNTAX}")
        key, eq, value = part.partition("=")
        key = key.strip().lower().removesuffix("_s")
        value = value.strip()
        if not eq or key not in _SLO_KEYS or not value:
            raise ConfigError(f"SLO target {part!r}: expected one of {_SLO_SYNTAX}")
        if f"{key}_s" in out:
            raise ConfigError(f"SLO {text!r}: {key} given twice")
        if key == "ttft" and "+" in value:
            base, _, per = value.partition("+")
            per = per.strip()
            if not per.lower().endswith("/tok"):
                raise ConfigError(
                    f"SLO target {part!r}: a length-aware TTFT is BASE+SECONDS/tok, e.g. 0.5+0.0002/tok"
                )
            out["ttft_s"] = _seconds("ttft", base.strip())
            out["ttft_per_token_s"] = _seconds("ttft per token", per[: -len("/tok")].strip())
        else:
            out[f"{key}_s"] = _seconds(key, value)
    return out


@dataclass(frozen=True, slots=True)
class Slo:
    """Per-request targets: time to first token (``ttft_s`` plus ``ttft_per_token_s`` per prompt token), time per
    output token after the first, optional end-to-end. ``math.inf`` for TTFT or TPOT means no target for that
    metric (a class given only ``e2e=600``, ``planner.slo_classes``); ``to_dict`` leaves such keys out."""

    ttft_s: float
    tpot_s: float
    e2e_s: float | None = None
    ttft_per_token_s: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.ttft_per_token_s) and self.ttft_per_token_s >= 0):
            raise ConfigError(f"SLO ttft per token must be >= 0 seconds, got {self.ttft_per_token_s}")
        for name in ("ttft_s", "tpot_s", "e2e_s"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and (math.isfinite(value) or name != "e2e_s")):
                raise ConfigError(
                    f"SLO {name.removesuffix('_s')} must be a positive number of seconds, got {value}"
                )

    def ttft_target(self, prompt_tokens: Any) -> Any:
        """The TTFT target (seconds) of requests with these prompt lengths (a number or an array)."""
        return self.ttft_s + self.ttft_per_token_s * np.asarray(prompt_tokens, dtype=np.float64)

    def to_dict(self) -> dict[str, float]:
        """The simulator's ``slo`` mapping (``ttft_s``, ``tpot_s``, and ``e2e_s``/``ttft_per_token_s`` when set)."""
        out = {k: v for k, v in (("ttft_s", self.ttft_s), ("tpot_s", self.tpot_s)) if math.isfinite(v)}
        if self.e2e_s is not None:
            out["e2e_s"] = self.e2e_s
        if self.ttft_per_token_s and "ttft_s" in out:
            out["ttft_per_token_s"] = self.ttft_per_token_s
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Slo:
        """From ``{"ttft_s": .., "tpot_s": .., "e2e_s": .., "ttft_per_token_s": ..}`` (``_s`` optional); a TTFT or
        TPOT left out is no target for it (at least one target is needed)."""
        values = {str(k).removesuffix("_s"): v for k, v in data.items()}
        unknown = set(values) - {"ttft", "tpot", "e2e", "ttft_per_token"}
        if unknown:
            raise ConfigError(f"unknown SLO key(s) {sorted(unknown)}; use ttft, tpot, e2e, ttft_per_token")
        if not {"ttft", "tpot", "e2e"} & set(values):
            raise ConfigError("an SLO needs at least one of ttft, tpot, e2e (seconds)")
        try:
            e2e = values.get("e2e")
            per = float(values.get("ttft_per_token", 0.0)) if "ttft" in values else 0.0
            ttft, tpot = float(values.get("ttft", math.inf)), float(values.get("tpot", math.inf))
            return cls(ttft, tpot, None if e2e is None else float(e2e), per)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"SLO values must be numbers: {exc}") from exc

    @property
    def strictness(self) -> tuple[float, float, float, float]:
        """(ttft, per token, tpot, e2e) with inf for no target, to compare and combine targets."""
        e2e = math.inf if self.e2e_s is None else self.e2e_s
        return self.ttft_s, self.ttft_per_token_s, self.tpot_s, e2e

    def tightest(self, other: Slo) -> Slo:
        """Each metric's stricter target of the two (a type mixing classes is planned for this)."""
        timed = [(s.ttft_s, s.ttft_per_token_s) for s in (self, other) if math.isfinite(s.ttft_s)]
        ttft = min((t for t, _ in timed), default=math.inf)
        per = min((p for _, p in timed), default=0.0)
        e2e = min(self.strictness[3], other.strictness[3])
        return Slo(ttft, min(self.tpot_s, other.tpot_s), None if math.isinf(e2e) else e2e, per)

    def scaled(self, factor: float) -> Slo:
        """Every target ``factor`` times looser (best-effort planning relaxes the SLO by this)."""
        e2e = None if self.e2e_s is None else self.e2e_s * factor
        return Slo(self.ttft_s * factor, self.tpot_s * factor, e2e, self.ttft_per_token_s * factor)

    def describe(self) -> str:
        parts = []
        if math.isfinite(self.ttft_s):
            per = f" + {self.ttft_per_token_s:.3g} s/tok" if self.ttft_per_token_s else ""
            parts.append(f"TTFT <= {self.ttft_s:.3g} s{per}")
        if math.isfinite(self.tpot_s):
            parts.append(f"TPOT <= {self.tpot_s * 1000:.3g} ms")
        if self.e2e_s is not None:
            parts.append(f"E2E <= {self.e2e_s:.3g} s")
        return ", ".join(parts) or "no target"


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
    # per prompt token: the prefill's per-token cost at the longest context the replica takes (attention makes it
    # grow with length), so base + per-token x prompt stays above scale x the idle prefill of any prompt it holds
    longest = max(int(config.max_model_len or model.max_position_embeddings), _TTFT_REF_PROMPT_TOKENS)
    per_token = scale * cm.prefill_time(1, longest) / longest
    # round up to readable values: 10 ms steps for TTFT, 1 ms for TPOT, 1 us per token
    return Slo(
        math.ceil(ttft * 100) / 100, math.ceil(tpot * 1000) / 1000, None, math.ceil(per_token * 1e6) / 1e6
    )

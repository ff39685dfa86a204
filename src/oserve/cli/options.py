"""Option parsers several commands share."""

from __future__ import annotations

import typer

from oserve.perf import Calibration
from oserve.planner import Slo, default_slo
from oserve.spec import Cluster, ModelSpec

__all__ = ["SLO_HELP", "parse_slo", "slo_option"]

SLO_HELP = (
    "Latency targets, seconds: ttft=S,tpot=S[,e2e=S]; `auto` (default) is 5x the model's unloaded latency "
    "on the cluster's vLLM-default replica shape; keys left out take that default."
)


def parse_slo(text: str) -> dict[str, float]:
    """``ttft=2,tpot=0.2,e2e=30`` (seconds) -> ``{"ttft_s": 2.0, ...}``; ``auto`` or empty -> ``{}``."""
    out: dict[str, float] = {}
    if text.strip().lower() == "auto":
        return out
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        key = key.strip().lower().removesuffix("_s")
        if key not in ("ttft", "tpot", "e2e") or not value:
            raise typer.BadParameter(
                f"expected auto or ttft=S,tpot=S,e2e=S; got {part!r}", param_hint="--slo"
            )
        try:
            out[f"{key}_s"] = float(value)
        except ValueError:
            raise typer.BadParameter(f"{part!r}: not a number", param_hint="--slo") from None
        if not out[f"{key}_s"] > 0 or out[f"{key}_s"] == float("inf"):
            raise typer.BadParameter(f"{part!r}: must be a positive number", param_hint="--slo")
    return out


def slo_option(text: str, model: ModelSpec, cluster: Cluster, calibration: Calibration | None = None) -> Slo:
    """The ``--slo`` value as an ``Slo``: given keys over the model's default."""
    given = parse_slo(text)
    base = default_slo(model, cluster, calibration).to_dict()
    return Slo.from_dict({**base, **given})

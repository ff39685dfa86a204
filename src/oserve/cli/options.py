"""Option parsers several commands share."""

from __future__ import annotations

import typer

from oserve.errors import ConfigError
from oserve.perf import Calibration
from oserve.planner import Slo, default_slo, parse_slo_targets
from oserve.spec import Cluster, ModelSpec

__all__ = ["SLO_HELP", "parse_slo", "slo_option"]

SLO_HELP = (
    "Latency targets, seconds: ttft=S,tpot=S[,e2e=S]; a length-aware TTFT as ttft=BASE+S/tok (seconds per "
    "prompt token); `auto` (default) is 5x the model's unloaded latency on the cluster's vLLM-default replica "
    "shape, length-aware; keys left out take that default."
)


def parse_slo(text: str) -> dict[str, float]:
    """``ttft=2,tpot=0.2,e2e=30`` or ``ttft=0.5+0.0002/tok,...`` (seconds) -> ``{"ttft_s": 2.0, ...}``;
    ``auto`` or empty -> ``{}``."""
    try:
        return parse_slo_targets(text)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint="--slo") from None


def slo_option(text: str, model: ModelSpec, cluster: Cluster, calibration: Calibration | None = None) -> Slo:
    """The ``--slo`` value as an ``Slo``: given keys over the model's default."""
    given = parse_slo(text)
    base = default_slo(model, cluster, calibration).to_dict()
    if "ttft_s" in given:  # a TTFT given without a per-token part means a flat target
        base.pop("ttft_per_token_s", None)
    return Slo.from_dict({**base, **given})

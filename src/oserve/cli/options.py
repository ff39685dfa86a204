"""Option parsers several commands share."""

from __future__ import annotations

import itertools

import typer

from oserve.errors import ConfigError
from oserve.perf import Calibration
from oserve.planner import Slo, default_slo, parse_slo_targets
from oserve.planner.slo_classes import SloClasses, parse_slo_classes
from oserve.spec import Cluster, ModelSpec
from oserve.trace import TypeGrid

__all__ = [
    "EDGES_HELP",
    "SLO_HELP",
    "grid_option",
    "parse_edges",
    "parse_slo",
    "slo_classes_option",
    "slo_option",
]

SLO_HELP = (
    "Latency targets, seconds: ttft=S,tpot=S[,e2e=S]; a length-aware TTFT as ttft=BASE+S/tok (seconds per "
    "prompt token); `auto` (default) is 5x the model's unloaded latency on the cluster's vLLM-default replica "
    "shape, length-aware; keys left out take that default. Per class, ';'-separated: "
    "'ttft=2,tpot=0.1;interactive:ttft=1,tpot=0.05;batch:prompt>=16000:e2e=600' (the part without NAME: is the "
    "default class; a named class has no target for a metric it leaves out; prompt>=N puts longer prompts in "
    "it; a trace's slo_class/class column names a request's class)."
)
EDGES_HELP = (
    "Cut request types at these {} lengths (tokens, comma-separated, increasing) instead of quantiles."
)


def parse_slo(text: str) -> dict[str, float]:
    """``ttft=2,tpot=0.2,e2e=30`` or ``ttft=0.5+0.0002/tok,...`` (seconds) -> ``{"ttft_s": 2.0, ...}``;
    ``auto`` or empty -> ``{}``."""
    try:
        return parse_slo_targets(text)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint="--slo") from None


def slo_classes_option(
    text: str, model: ModelSpec, cluster: Cluster, calibration: Calibration | None = None
) -> SloClasses:
    """The ``--slo`` value as classes: the default class's given keys over the model's default."""
    try:
        return parse_slo_classes(text, default_slo(model, cluster, calibration))
    except ConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint="--slo") from None


def slo_option(text: str, model: ModelSpec, cluster: Cluster, calibration: Calibration | None = None) -> Slo:
    """The ``--slo`` value's default class as an ``Slo``: given keys over the model's default."""
    return slo_classes_option(text, model, cluster, calibration).default


def parse_edges(text: str | None, option: str) -> tuple[int, ...] | None:
    """``1024,8192,32768`` -> ``(1024, 8192, 32768)``; None or empty -> None. Edges must increase."""
    if text is None or not text.strip():
        return None
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise typer.BadParameter(
            f"expected comma-separated token counts, got {text!r}", param_hint=option
        ) from None
    if any(v < 1 for v in values) or any(b <= a for a, b in itertools.pairwise(values)):
        raise typer.BadParameter(
            f"edges must be positive and strictly increasing, got {text!r}", param_hint=option
        )
    return values


def grid_option(
    trace, num_types: int, prompt_edges: str | None, output_edges: str | None, extra_prompt_edges=()
) -> TypeGrid:
    """The request-type grid: the given edges, quantiles of ``trace`` for a side left out (``num_types`` in all,
    long-context prompts in their own bucket), and any ``extra_prompt_edges`` (the SLO classes' prompt rules)."""
    prompts, outputs = (
        parse_edges(prompt_edges, "--prompt-edges"),
        parse_edges(output_edges, "--output-edges"),
    )
    auto = TypeGrid.for_types(trace, num_types)
    cut_prompts = prompts if prompts is not None else auto.prompt_edges
    if prompts is None and extra_prompt_edges:  # a rule's edge replaces a quantile edge within 25% of it
        near = [e for e in cut_prompts if not any(0.8 <= e / x <= 1.25 for x in extra_prompt_edges)]
        cut_prompts = tuple(sorted(set(near) | set(extra_prompt_edges)))
    return TypeGrid(cut_prompts, outputs if outputs is not None else auto.output_edges)

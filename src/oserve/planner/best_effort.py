"""Best-effort types: a type no replica config serves within its target is planned at a relaxed one, not refused.

A type whose mu is 0 on every config for a reason other than context length (the SLO is missed even on an idle
replica, or its requests' KV does not fit within the batch the target allows) is re-priced at the type's targets
times a factor: the first of a ladder, starting from the ratio by which the config closest to target misses it
idle, at which some config serves the type. The flow LP then routes it like any other type at that capacity: its
requests get the most attainment the cluster can give them, and the plan says which types and why. Only requests
beyond every config's ``max_model_len`` are refused (``plan._unheld``, the simulator's ``rejected``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from oserve.planner.capacity import Capacity, CapacityModel
from oserve.planner.demand import TypeDemand
from oserve.planner.slo import Slo
from oserve.spec import ReplicaConfig

__all__ = ["BestEffort", "relax_unservable"]

#: relaxations tried, times the idle miss ratio of the closest config (so the first try already clears idle)
_LADDER = (1.25, 1.6, 2.5, 4.0, 8.0, 16.0)


@dataclass(frozen=True, slots=True)
class BestEffort:
    """A type planned below its target: ``reason`` in words, the ``relax`` factor its capacity was priced at
    (``math.inf``: no relaxation served it; planned at rate 0) and the config closest to target idle."""

    type: str
    reason: str
    relax: float
    closest_config: str
    target: Slo

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "reason": self.reason,
            "relax": self.relax if math.isfinite(self.relax) else None,
            "closest_config": self.closest_config,
            "target": self.target.to_dict(),
        }


def _idle_miss(capm: CapacityModel, config: ReplicaConfig, d: TypeDemand, slo: Slo) -> float:
    """How many times over its target an idle ``config`` serves the type's mean request (max over metrics)."""
    ttft, tpot = capm.unloaded(config, d.prompt_tokens, d.output_tokens)
    ratios = [ttft / float(slo.ttft_target(d.prompt_tokens))]
    if d.output_tokens > 1:
        ratios.append(tpot / slo.tpot_s)
    if slo.e2e_s is not None:
        ratios.append((ttft + tpot * max(d.output_tokens - 1, 0)) / slo.e2e_s)
    return max(ratios)


def relax_unservable(
    demand: TypeDemand,
    slo: Slo,
    configs: Sequence[ReplicaConfig],
    row: list[Capacity],
    lengths: tuple[np.ndarray, np.ndarray],
    capm: CapacityModel,
    make_capm,
) -> tuple[list[Capacity], BestEffort]:
    """The type's capacities at the first relaxation that serves it, and what was done (``BestEffort``).

    ``row``: its capacities at target (all 0); ``lengths``: the requests some config holds; ``make_capm(slo)``:
    a capacity model at another target."""
    fits = [j for j, c in enumerate(row) if c.limit not in ("unfit", "context")]
    misses = {j: _idle_miss(capm, configs[j], demand, slo) for j in fits}
    closest = min(misses, key=misses.get) if misses else 0
    base = max(misses.get(closest, 1.0), 1.0)
    idle = capm.unloaded(configs[closest], demand.prompt_tokens, demand.output_tokens)
    why = (
        f"no config meets {slo.describe()} for type {demand.name} (mean prompt {demand.prompt_tokens:.0f}, output "
        f"{demand.output_tokens:.0f} tokens; limits {', '.join(sorted({c.limit for c in row}))}); closest idle: "
        f"{configs[closest].label} at TTFT {idle[0]:.3g} s, TPOT {idle[1] * 1000:.3g} ms"
    )
    for step in _LADDER:
        factor = base * step
        relaxed = make_capm(slo.scaled(factor))
        trial = [
            relaxed.capacity(configs[j], *lengths) if j in misses else row[j] for j in range(len(configs))
        ]
        if any(c.rate_rps > 0 for c in trial):
            reason = f"{why}; planned best-effort at {factor:.3g}x the targets"
            return trial, BestEffort(demand.name, reason, factor, configs[closest].label, slo)
    reason = f"{why}; no config serves it even at {base * _LADDER[-1]:.3g}x the targets: planned at rate 0"
    return row, BestEffort(demand.name, reason, math.inf, configs[closest].label, slo)

"""The headline's ``--sensitivity``: oserve on the phased scenarios with its forecast off and its switches dearer.

Per phased scenario x setup (``headline._phased_setups``): ``oserve`` unperturbed first (its start seeded with
``static``'s deployment), then forecasts off by +-10/25/50% (``NoisySource``), switch costs x2 and x5, and standby
engines (0.1 s wake-ups instead of 30 s cold starts); each variant against ``static`` and against unperturbed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace

from oserve.adapt.decide import DecisionConfig
from oserve.adapt.forecast import make_forecaster
from oserve.adapt.policy import DemandSource, ForecastSource, NoisySource
from oserve.adapt.switch import WAKE_RESTART_S
from oserve.planner import simulated_best_homogeneous

__all__ = ["run_sensitivity", "variants"]


def variants(config: DecisionConfig) -> list[tuple[str, DemandSource, DecisionConfig]]:
    """(label, forecast source, decision config) per variant, ``unperturbed`` first."""
    out = [("unperturbed", ForecastSource(make_forecaster("ewma")), config)]
    out += [
        (f"forecast +-{e:.0%}", NoisySource(ForecastSource(make_forecaster("ewma")), e), config)
        for e in (0.1, 0.25, 0.5)
    ]
    out += [
        (
            f"switch cost x{f:g}",
            ForecastSource(make_forecaster("ewma")),
            replace(config, restart_s=config.restart_s * f, cost_factor=f),
        )
        for f in (2, 5)
    ]
    # standby engines (sleep mode): a switch wakes engines in 0.1 s instead of a 30 s cold start
    out.append(
        (
            "standby engines",
            ForecastSource(make_forecaster("ewma")),
            replace(config, restart_s=WAKE_RESTART_S),
        )
    )
    return out


def _over(a: float, b: float, none: float) -> float:
    return a / b if b > 0 else none


def run_sensitivity(
    phased: Iterable[tuple], config: DecisionConfig, run_adaptive: Callable, row: Callable[[dict], dict]
) -> list[dict]:
    """Every variant on every ``(setup, scenario, model, cluster, slo, trace)`` of ``phased``: ``run_adaptive``
    (``headline._adaptive``) runs oserve from the static seed, ``row`` (``headline._row``) keeps the figures.
    Prints a line per variant; returns the items for the JSON."""
    items = []
    for setup, scenario, model, cluster, slo, trace in phased:
        dep, res, _ = simulated_best_homogeneous(trace, model, cluster, slo=slo.to_dict())
        static = row(res.summary)
        base = None
        for label, source, cfg in variants(config):
            r = row(run_adaptive(trace, model, cluster, slo, source, cfg, (dep, "weighted", res)))
            base = base or r  # oserve as the headline runs it: each variant is judged against it too
            item = {
                "setup": setup,
                "scenario": scenario,
                "variant": label,
                "goodput_ratio": _over(r["goodput_rps"], static["goodput_rps"], 0.0),
                "p99_ratio": _over(static["e2e_p99"], r["e2e_p99"], float("inf")),
                "switches": r["switches"],
                "goodput_vs_unperturbed": _over(r["goodput_rps"], base["goodput_rps"], 0.0),
                "p99_vs_unperturbed": _over(base["e2e_p99"], r["e2e_p99"], float("inf")),
            }
            items.append(item)
            print(
                f"sensitivity {setup:<28} {scenario:<8} {label:<18} vs static: goodput x{item['goodput_ratio']:.3f} "
                f"p99 x{item['p99_ratio']:.2f} | vs unperturbed: goodput x{item['goodput_vs_unperturbed']:.3f} "
                f"p99 x{item['p99_vs_unperturbed']:.2f} | switches {item['switches']:.0f}",
                flush=True,
            )
    return items

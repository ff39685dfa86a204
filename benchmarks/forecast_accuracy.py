"""How well each workload forecaster predicts the per-type arrival rate, and what it costs (one core).

    python benchmarks/forecast_accuracy.py [--traces ../shared/data/traces] [--json benchmarks/results/forecast_accuracy.json]
                                           [--bin 10] [--histories 60,1200] [--horizons 60,300] [--phase 600]

Series: the Azure code and conversation hours, and a shifting scenario that alternates them in ``--phase``-second
phases (``oserve.trace.alternate``), each cut into 6 request types at its own length quantiles and binned into
``--bin``-second rates (a trailing partial bin dropped). For every (history, horizon) pair every forecaster is
backtested from rolling origins one bin apart, after the first 600 s (training only), refitting every 600 s on
everything so far; all forecasters are scored on the same origins. ``seasonal`` gets the shifting scenario's cycle
(two phases) as its period. Ratios are against ``last`` (the naive forecast) in the same run.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from oserve.adapt import BacktestResult, backtest, parse_forecaster
from oserve.trace import Trace, TypeGrid, alternate, load_trace, workload_series

TRAIN_S = 600.0
REFIT_S = 600.0
TYPES = 6


def series_of(trace: Trace, bin_s: float) -> tuple[np.ndarray, tuple[str, ...]]:
    grid = TypeGrid.for_types(trace, TYPES)
    s = workload_series(trace, grid, bin_s)
    return s.rates_rps[s.window_len_s >= bin_s - 1e-9], grid.names


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def run(
    rates: np.ndarray, names: tuple[str, ...], specs: list[str], history: int, horizon: int, bin_s: float
) -> list[BacktestResult]:
    train, refit = round(TRAIN_S / bin_s), round(REFIT_S / bin_s)
    return [
        backtest(
            rates,
            parse_forecaster(spec),
            history,
            horizon,
            train_windows=train,
            refit_windows=refit,
            type_names=names,
            label=spec.split(":")[0],
        )
        for spec in specs
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--traces", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/traces")
    p.add_argument(
        "--json", type=Path, default=Path(__file__).resolve().parent / "results/forecast_accuracy.json"
    )
    p.add_argument("--bin", type=float, default=10.0, help="rate bin (one forecast step), s")
    p.add_argument("--histories", default="60,1200", help="history lengths the forecasters see, s")
    p.add_argument("--horizons", default="60,300", help="forecast horizons, s")
    p.add_argument("--phase", type=float, default=600.0, help="phase of the shifting scenario, s")
    args = p.parse_args(argv)
    paths = {name: args.traces / f"azure_{name}_2023.csv" for name in ("code", "conv")}
    missing = [str(x) for x in paths.values() if not x.is_file()]
    if missing:
        print(f"trace not found: {', '.join(missing)}", file=sys.stderr)
        return 1
    traces = {name: load_trace(path) for name, path in paths.items()}
    traces["shift"] = alternate([traces["code"], traces["conv"]], phase_s=args.phase, name="code/conv shift")
    period = round(2 * args.phase / args.bin)
    specs = ["last", "ewma", f"seasonal:period_windows={period}", "holt-winters", "arima", "lstm"]
    series = {name: series_of(trace, args.bin) for name, trace in traces.items()}

    doc: dict = {
        "bin_s": args.bin,
        "train_s": TRAIN_S,
        "refit_s": REFIT_S,
        "types": TYPES,
        "forecasters": specs,
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
        "series": {n: {"bins": len(r), "types": list(t)} for n, (r, t) in series.items()},
        "runs": [],
    }
    start = time.perf_counter()
    for history_s in _floats(args.histories):
        for horizon_s in _floats(args.horizons):
            history, horizon = round(history_s / args.bin), round(horizon_s / args.bin)
            print(f"\nhistory {history_s:g} s, horizon {horizon_s:g} s ({args.bin:g} s bins, scored after "
                  f"{max(TRAIN_S, history_s):g} s; in brackets: MAE / last's MAE; fb: fallbacks)")  # fmt: skip
            header = f"{'forecaster':14s}" + "".join(f" | {n:^44s}" for n in series)
            print(header + "\n" + f"{'':14s}" + " | sMAPE%  MAPE%  total-sMAPE%  MAE (x last)  fb%" * 3)
            by_series = {}
            for name, (rates, names) in series.items():
                by_series[name] = run(rates, names, specs, history, horizon, args.bin)
                for r in by_series[name]:
                    doc["runs"].append({"series": name, "history_s": history_s, "horizon_s": horizon_s,
                                        **r.to_dict()})  # fmt: skip
            for i, spec in enumerate(specs):
                cells = []
                for name in series:
                    r, last = by_series[name][i], by_series[name][0]
                    ratio = (
                        r.overall.mae_rps / last.overall.mae_rps if last.overall.mae_rps > 0 else float("nan")
                    )
                    cells.append(
                        f" | {r.overall.smape_pct:6.1f} {r.overall.mape_pct:6.1f} {r.total.smape_pct:8.1f}     "
                        f"{r.overall.mae_rps:5.3f} ({ratio:4.2f}) {100 * r.fallback_share:4.0f}"
                    )
                print(f"{spec.split(':')[0]:14s}" + "".join(cells))
            costs = "; ".join(
                f"{r.forecaster} fit {sum(by_series[n][i].fit_s for n in series):.1f} s, "
                f"{np.mean([by_series[n][i].forecast_ms for n in series]):.2f} ms/forecast"
                for i, r in enumerate(by_series["conv"])
            )
            print(f"cost over the three series: {costs}")
    doc["wall_s"] = time.perf_counter() - start
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=2))
    print(f"\nwall {doc['wall_s']:.0f} s; wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``oserve forecast``: backtest workload forecasters on a trace's per-type rates; which one to trust, and how much."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import typer
from rich.table import Table

from oserve.adapt import FORECASTERS, BacktestResult, ErrorStats, backtest, parse_forecaster
from oserve.cli.console import make_console
from oserve.errors import ConfigError
from oserve.trace import TypeGrid, load_trace, workload_series

console = make_console()

RANKS = {"smape": "sMAPE", "mape": "MAPE", "mae": "MAE"}


def _windows(seconds: float, bin_s: float, option: str, *, minimum: int = 1) -> int:
    """``seconds`` as a whole number of bins; a usage error when shorter than ``minimum`` bins or not a multiple."""
    count = seconds / bin_s
    if count < minimum - 1e-9:
        raise typer.BadParameter(f"{seconds:g} s is shorter than one --bin ({bin_s:g} s)", param_hint=option)
    if abs(count - round(count)) > 1e-6:
        raise typer.BadParameter(f"{seconds:g} s is not a multiple of --bin ({bin_s:g} s)", param_hint=option)
    return round(count)


def _specs(text: str) -> list[str]:
    specs = [s.strip() for s in text.split(",") if s.strip()]
    if not specs:
        raise typer.BadParameter("name at least one forecaster", param_hint="--forecasters")
    return specs


def _default_specs() -> str:
    """Every registered forecaster; ``lstm`` only where PyTorch is installed."""
    names = list(FORECASTERS)
    if importlib.util.find_spec("torch") is None:
        names.remove("lstm")
    return ",".join(names)


def _score(stats: ErrorStats, rank: str) -> float:
    value = {"smape": stats.smape_pct, "mape": stats.mape_pct, "mae": stats.mae_rps}[rank]
    return math.inf if math.isnan(value) else value


def _pct(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"


def forecast_cmd(
    trace: Path = typer.Option(..., "--trace", "-t", help="Trace file (any supported format)."),
    window_s: float = typer.Option(60.0, "--window", help="History the forecasters see, s."),
    horizon_s: float = typer.Option(300.0, "--horizon", help="How far ahead to forecast, s."),
    bin_s: float = typer.Option(10.0, "--bin", min=0.001, help="Rate window (one forecast step), s."),
    types: int = typer.Option(
        6, "--types", min=1, max=64, help="Request types cut from the trace (quantiles)."
    ),
    forecasters: str | None = typer.Option(
        None,
        "--forecasters",
        "-f",
        help="Comma-separated, with parameters as name:key=value (e.g. ewma:alpha=0.5, seasonal:period_windows=120); "
        f"default: all ({', '.join(FORECASTERS)}; lstm needs the profile extra).",
    ),
    train_s: float = typer.Option(
        600.0,
        "--train",
        min=0.0,
        help="Leading seconds used only to fit, not scored (0: score from --window on).",
    ),
    refit_s: float = typer.Option(
        600.0,
        "--refit",
        min=0.0,
        help="Refit learned forecasters on everything so far every S seconds (0: never).",
    ),
    rank: str = typer.Option("smape", "--rank", help="Pick the best by smape | mape | mae (overall)."),
    json_out: Path | None = typer.Option(None, "--json", help="Write every figure as JSON."),
    plot: Path | None = typer.Option(None, "--plot", help="PNG: actual vs forecast per type for the best."),
) -> None:
    """Backtest forecasters of the per-type arrival rate on a trace: rolling origins, sMAPE / MAPE per type.

    At each bin after the training period every forecaster sees the last --window seconds of per-type rates and
    predicts the next --horizon seconds; errors pool all steps of all origins. MAPE leaves out zero actuals;
    sMAPE counts 0-for-0 as exact.
    """
    if rank not in RANKS:
        raise typer.BadParameter(f"choose one of {', '.join(RANKS)}", param_hint="--rank")
    history = _windows(window_s, bin_s, "--window")
    horizon = _windows(horizon_s, bin_s, "--horizon")
    train = _windows(train_s, bin_s, "--train", minimum=0)
    refit = _windows(refit_s, bin_s, "--refit", minimum=0) or None
    specs = _specs(forecasters if forecasters is not None else _default_specs())
    models = [parse_forecaster(s) for s in specs]  # unknown names and parameters fail before any work

    workload = load_trace(trace)
    grid = TypeGrid.for_types(workload, types)
    series = workload_series(workload, grid, bin_s)
    full = series.window_len_s >= bin_s - 1e-9  # a trailing partial bin would be a noisier step
    rates = series.rates_rps[full]
    need = max(history, train) + horizon
    if len(rates) < need:
        raise ConfigError(
            f"{trace.name} has {len(rates)} full {bin_s:g} s bins ({len(rates) * bin_s:g} s); "
            f"--window {window_s:g} s (or --train {train_s:g} s) plus --horizon {horizon_s:g} s needs {need * bin_s:g} s"
        )
    console.print(
        f"[bold]{workload.name}[/]: {len(workload):,} requests, {len(rates)} bins of {bin_s:g} s, "
        f"{grid.num_types} types; history {window_s:g} s ({history} bins), horizon {horizon_s:g} s ({horizon} bins), "
        f"scored after {max(history, train) * bin_s:g} s, "
        + (f"refit every {refit_s:g} s" if refit else "fitted once"),
        highlight=False,
    )
    results: list[BacktestResult] = []
    for spec, model in zip(specs, models, strict=True):
        with console.status(f"backtesting {spec}"):
            results.append(
                backtest(
                    rates,
                    model,
                    history,
                    horizon,
                    train_windows=train,
                    refit_windows=refit,
                    type_names=grid.names,
                    label=spec,
                )
            )
    best = min(results, key=lambda r: _score(r.overall, rank))
    _print(results, best, grid, rank)

    if json_out is not None:
        doc = {
            "trace": str(trace),
            "bin_s": bin_s,
            "window_s": window_s,
            "horizon_s": horizon_s,
            "train_s": train_s,
            "refit_s": refit_s,
            "types": list(grid.names),
            "rank": rank,
            "best": best.forecaster,
            "results": [r.to_dict() for r in results],
        }
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(doc, indent=2))
        console.print(f"wrote {json_out}", highlight=False)
    if plot is not None:
        from oserve.report.forecast_plots import plot_backtest  # matplotlib only when asked

        plot_backtest(best, plot, bin_s=bin_s)
        console.print(f"wrote {plot} ({best.forecaster})", highlight=False)


def _print(results: list[BacktestResult], best: BacktestResult, grid: TypeGrid, rank: str) -> None:
    shorts = [rt.short for rt in grid.types]
    for metric, key in (("sMAPE", "smape_pct"), ("MAPE", "mape_pct")):
        table = Table(
            "forecaster",
            "overall",
            "total rate",
            *shorts,
            title=f"{metric} % (lower is better; types pooled overall, summed for the total rate)",
        )
        cells = np.array(
            [[getattr(s, key) for s in (r.overall, r.total, *r.per_type)] for r in results], dtype=np.float64
        )
        lowest = np.nanmin(np.where(np.isnan(cells), np.inf, cells), axis=0)
        for r, row in zip(results, cells, strict=True):
            label = f"{r.forecaster} [bold green]*best[/]" if r is best else r.forecaster
            table.add_row(
                label,
                *(f"[bold]{_pct(v)}[/]" if v == low else _pct(v) for v, low in zip(row, lowest, strict=True)),
            )
        console.print(table)
    cost = Table(
        "forecaster", "MAE req/s", "fallbacks", "fit s", "ms / forecast", title="error in req/s and cost"
    )
    for r in results:
        cost.add_row(
            r.forecaster,
            f"{r.overall.mae_rps:.3f}",
            f"{r.fallback_share:.0%}",
            f"{r.fit_s:.2f}",
            f"{r.forecast_ms:.2f}",
        )
    console.print(cost)
    for r in results:
        if r.fallback_share >= 0.5:
            console.print(
                f"[yellow]note:[/] {r.forecaster} fell back to a simpler rule on {r.fallback_share:.0%} of its "
                "forecasts (too little history for it, e.g. shorter than a seasonal period): its row measures "
                "that rule, not the forecaster",
                highlight=False,
                soft_wrap=True,
            )
    console.print(
        "types: " + "; ".join(f"{rt.short} = {rt.name}" for rt in grid.types),
        highlight=False,
        soft_wrap=True,
    )
    console.print(f"best by {RANKS[rank]}: [bold]{best.forecaster}[/]", highlight=False)

"""``oserve trace``: inspect a trace (rates, lengths, request-type mix over time) and convert / mix traces."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import typer
from rich.table import Column, Table

from oserve.cli.console import make_console
from oserve.errors import ConfigError
from oserve.trace import (
    DEFAULT_NUM_TYPES,
    Trace,
    TypeGrid,
    alternate,
    blend,
    clip_lengths,
    concat,
    load_trace,
    measure_workload,
    scale_rate,
    trace_stats,
    truncate,
    window,
    window_stats,
    workload_series,
)
from oserve.trace.stats import LengthStats

app = typer.Typer(no_args_is_help=True, help="Inspect, convert and mix request traces.")
console = make_console()

_FORMAT_HELP = "auto | azure | mooncake | burstgpt | plain"


def _edges(text: str | None, what: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError:
        raise ConfigError(f"--{what}-edges must be comma-separated integers, got {text!r}") from None


def _grid(trace: Trace, types: int, prompt_edges: str | None, output_edges: str | None) -> TypeGrid:
    pe, oe = _edges(prompt_edges, "prompt"), _edges(output_edges, "output")
    if pe is None and oe is None:
        return TypeGrid.for_types(trace, types)
    return TypeGrid(pe or (), oe or ())


def _clock(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _lengths(ls: LengthStats) -> list[str]:
    return [f"{ls.mean:,.0f}", f"{ls.p50:,.0f}", f"{ls.p90:,.0f}", f"{ls.p99:,.0f}", f"{ls.max:,.0f}"]


def _rows_shown(count: int, max_rows: int) -> np.ndarray:
    if count <= max_rows:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, max_rows).round().astype(int))


def _print_warnings(trace: Trace) -> None:
    for line in trace.report.warnings:
        console.print(f"[yellow]warning:[/] {line}", highlight=False)


def _prefix_bound(trace: Trace) -> dict[str, float] | None:
    """The prefix-cache bound of a trace with block hashes (Mooncake ``hash_ids``), else None."""
    ids = trace.extras.get("hash_ids")
    if ids is None:
        return None
    from oserve.sim.prefix_cache import infinite_hit_rate

    return {
        "blocks": int(sum(len(row) for row in ids)),
        "distinct_blocks": len({int(h) for row in ids for h in row}),
        "block_hit_rate": infinite_hit_rate(ids),
        "token_hit_rate": infinite_hit_rate(ids, trace.prompt_tokens),
    }


@app.command("stats")
def stats(
    file: Path = typer.Argument(..., help="trace file (CSV, JSON lines or Parquet; .gz ok)"),
    window_s: float = typer.Option(300.0, "--window", help="window length for the time series, s"),
    types: int = typer.Option(DEFAULT_NUM_TYPES, "--types", help="number of request types (quantile grid)"),
    prompt_edges: str | None = typer.Option(
        None, "--prompt-edges", help="prompt-length edges, e.g. 512,2048"
    ),
    output_edges: str | None = typer.Option(None, "--output-edges", help="output-length edges, e.g. 128"),
    plot: Path | None = typer.Option(None, "--plot", help="write a PNG: rate, type mix, length histograms"),
    json_out: Path | None = typer.Option(None, "--json", help="write every figure as JSON"),
    fmt: str = typer.Option("auto", "--format", help=_FORMAT_HELP),
    max_rows: int = typer.Option(24, "--max-rows", help="most windows to print (the JSON has all)"),
) -> None:
    """Print rate and length percentiles overall and per window, and the request-type mix over time."""
    trace = load_trace(file, format=fmt)
    grid = _grid(trace, types, prompt_edges, output_edges)
    overall = trace_stats(trace)
    workload = measure_workload(trace, grid)
    windows = window_stats(trace, window_s)
    series = workload_series(trace, grid, window_s)

    console.print(
        f"[bold]{trace.name}[/]: {len(trace):,} requests over {trace.duration_s:,.1f} s "
        f"({_clock(trace.duration_s)}), {trace.rate_rps:.3f} req/s; format {trace.report.format}, "
        f"t=0 is {trace.report.origin or 'the trace start'}",
        highlight=False,
    )
    _print_warnings(trace)
    lengths = Table("tokens", "mean", "p50", "p90", "p99", "max", title="request lengths")
    lengths.add_row("prompt", *_lengths(overall.prompt))
    lengths.add_row("output", *_lengths(overall.output))
    console.print(lengths)
    prefix = _prefix_bound(trace)
    if prefix is not None:
        console.print(
            f"prefix blocks (512 tokens): {prefix['distinct_blocks']:,} distinct of {prefix['blocks']:,}; with an "
            f"unbounded cache {prefix['block_hit_rate']:.1%} of blocks and {prefix['token_hit_rate']:.1%} of prompt "
            "tokens would hit (docs/simulate.md, Prefix caching)",
            highlight=False,
        )

    mix = Table(
        "id",
        Column("type", no_wrap=True),
        "requests",
        "share",
        "req/s",
        Column("prompt mean/p99", no_wrap=True),
        Column("output mean/p99", no_wrap=True),
        title=f"request types ({grid.num_types})",
    )
    for rt, load, share in zip(grid.types, workload.types, workload.shares, strict=True):
        mix.add_row(
            rt.short,
            rt.name,
            f"{load.count:,}",
            f"{share:.1%}",
            f"{load.rate_rps:.3f}",
            f"{load.prompt.mean:,.0f} / {load.prompt.p99:,.0f}",
            f"{load.output.mean:,.0f} / {load.output.p99:,.0f}",
        )
    console.print(mix)

    shown = _rows_shown(len(windows), max_rows)
    note = "" if len(shown) == len(windows) else f", {len(shown)} of {len(windows)} shown"
    per = Table(
        "start",
        "requests",
        "req/s",
        "prompt p50/p99",
        "output p50/p99",
        title=f"per {window_s:g} s window{note}",
    )
    shares = Table(
        "start", *(rt.short for rt in grid.types), title=f"type mix per window (% of requests{note})"
    )
    for i in shown:
        w = windows[i]
        per.add_row(
            _clock(w.start_s),
            f"{w.num_requests:,}",
            f"{w.rate_rps:.2f}",
            f"{w.prompt.p50:,.0f} / {w.prompt.p99:,.0f}",
            f"{w.output.p50:,.0f} / {w.output.p99:,.0f}",
        )
        shares.add_row(_clock(w.start_s), *(f"{100 * s:.0f}" for s in series.shares[i]))
    console.print(per)
    console.print(shares)

    if json_out is not None:
        doc = {
            "trace": overall.to_dict(),
            "load": trace.report.to_dict(),
            "workload": workload.to_dict(),
            "windows": [w.to_dict() for w in windows],
            "series": series.to_dict(),
        }
        if prefix is not None:
            doc["prefix"] = prefix
        json_out.write_text(json.dumps(doc, indent=2))
        console.print(f"wrote {json_out}", highlight=False)
    if plot is not None:
        from oserve.report.trace_plots import plot_trace  # matplotlib only when asked

        plot_trace(trace, grid, plot, window_s=window_s)
        console.print(f"wrote {plot}", highlight=False)


def _write(trace: Trace, out: Path) -> None:
    if out.suffix == ".parquet":
        trace.to_parquet(out)
    else:
        trace.to_csv(out)
    console.print(
        f"wrote {out}: {len(trace):,} requests over {trace.duration_s:,.1f} s, {trace.rate_rps:.3f} req/s",
        highlight=False,
    )


@app.command("convert")
def convert(
    src: Path = typer.Argument(..., help="input trace (any supported format)"),
    out: Path = typer.Argument(..., help="output: plain CSV (.csv, .csv.gz) or .parquet"),
    fmt: str = typer.Option("auto", "--format", help=_FORMAT_HELP),
    start_s: float = typer.Option(0.0, "--start", help="window start, s"),
    end_s: float | None = typer.Option(None, "--end", help="window end, s (default: the end)"),
    scale: float = typer.Option(1.0, "--scale", help="multiply the arrival rate"),
    scale_method: str = typer.Option("resample", "--scale-method", help="resample | compress"),
    max_requests: int | None = typer.Option(None, "--max-requests", help="keep the first N requests"),
    max_model_len: int | None = typer.Option(None, "--max-model-len", help="clip prompt+output to this"),
    seed: int = typer.Option(0, "--seed", help="seed for rate scaling"),
) -> None:
    """Write a trace in the plain format, optionally windowed, rate-scaled, truncated and clipped."""
    trace = load_trace(src, format=fmt)
    _print_warnings(trace)
    if start_s > 0 or end_s is not None:
        trace = window(trace, start_s, end_s)
    if scale != 1.0:
        trace = scale_rate(trace, scale, seed=seed, method=scale_method)  # type: ignore[arg-type]
    if max_requests is not None:
        trace = truncate(trace, max_requests=max_requests)
    if max_model_len is not None:
        trace = clip_lengths(trace, max_model_len=max_model_len)
    _write(trace, out)


@app.command("mix")
def mix(
    inputs: list[Path] = typer.Argument(..., help="two or more traces"),
    out: Path = typer.Option(..., "--out", "-o", help="output: plain CSV or .parquet"),
    phase_s: float | None = typer.Option(None, "--phase", help="alternate phase_s-long slices of each input"),
    weights: str | None = typer.Option(None, "--weights", help="superpose, scaling input rates, e.g. 1,0.5"),
    back_to_back: bool = typer.Option(False, "--concat", help="play the inputs one after another"),
    seed: int = typer.Option(0, "--seed", help="seed for blending"),
) -> None:
    """Combine traces: alternate phases (--phase), superpose (--weights) or concatenate (--concat)."""
    if sum([phase_s is not None, weights is not None, back_to_back]) != 1:
        raise ConfigError("choose exactly one of --phase, --weights, --concat")
    traces = [load_trace(p) for p in inputs]
    if phase_s is not None:
        result = alternate(traces, phase_s=phase_s)
    elif weights is not None:
        try:
            ws = [float(w) for w in weights.split(",")]
        except ValueError:
            raise ConfigError(f"--weights must be comma-separated numbers, got {weights!r}") from None
        result = blend(traces, weights=ws, seed=seed)
    else:
        result = concat(traces)
    _write(result, out)

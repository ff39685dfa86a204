"""``oserve perf``: the cost model from the command line — show, calibrate, fit, predict."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from oserve.cli.console import make_console
from oserve.errors import CalibrationError
from oserve.perf import Calibration, CostModel, builtin_calibration, calibrate_from_profiles
from oserve.perf.fit import fit_points, predict_points, read_points
from oserve.perf.profiles import default_profiles_dir
from oserve.spec import ReplicaConfig, get_gpu, get_model

app = typer.Typer(
    no_args_is_help=True, help="Cost model: iteration times, KV capacity, calibration and fitting."
)
console = make_console()


def _calibration(path: Path | None) -> Calibration:
    return Calibration.load(path) if path else builtin_calibration()


def cost_table(model: str, gpu: str, tps: list[int], pp: int, calibration: Calibration) -> Table:
    """KV capacity and iteration times of a model across TP degrees (used by `perf show` and the demo)."""
    spec = get_model(model)
    table = Table(
        "config",
        "weights GiB/GPU",
        "KV tokens",
        "decode b=1 ms",
        "decode b=64 ms",
        "prefill 2k ms",
        "prefill tok/s/GPU",
        title=f"{spec.name} on {get_gpu(gpu).name}: cost model",
    )
    for tp in tps:
        replica = ReplicaConfig(get_gpu(gpu), tp=tp, pp=pp)
        label = f"tp{tp}" + (f"pp{pp}" if pp > 1 else "")
        cm = CostModel(spec, replica, calibration)
        if not cm.fits:
            table.add_row(label, f"{cm.memory.weight_bytes / 2**30:.1f}", "does not fit", "-", "-", "-", "-")
            continue
        prefill = cm.prefill_time(1, 2048)
        table.add_row(
            label,
            f"{cm.memory.weight_bytes / 2**30:.1f}",
            f"{cm.kv_capacity_tokens:,}",
            f"{cm.decode_time(1, 1024) * 1e3:.2f}",
            f"{cm.decode_time(64, 1024) * 1e3:.2f}",
            f"{prefill * 1e3:.1f}",
            f"{2048 / prefill / replica.num_gpus:,.0f}",
        )
    return table


@app.command("show")
def show(
    model: str = typer.Option("llama-3-8b", "--model", "-m", help="Catalogue name or config.json path."),
    gpu: str = typer.Option("h100", "--gpu", "-g", help="GPU type (see `oserve spec gpus`)."),
    tp: str = typer.Option("1,2,4,8", "--tp", help="Comma-separated TP degrees."),
    pp: int = typer.Option(1, "--pp", min=1, help="Pipeline-parallel degree."),
    calibration: Path | None = typer.Option(
        None, "--calibration", "-c", help="Calibration JSON (default built-in: today's vLLM)."
    ),
) -> None:
    """Print KV capacity and iteration times of a model on a GPU type across TP degrees, and the calibration's
    source (which data, which stack and version)."""
    try:
        tps = [int(x) for x in tp.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(
            f"expected comma-separated integers, got {tp!r}", param_hint="--tp"
        ) from None
    if not tps or min(tps) < 1:
        raise typer.BadParameter(f"expected positive TP degrees, got {tp!r}", param_hint="--tp")
    calib = _calibration(calibration)
    console.print(cost_table(model, gpu, tps, pp, calib))
    used = calib.for_gpu(get_gpu(gpu))
    origin = str(calibration) if calibration else "built-in"
    console.print(f"calibration: {origin}; {get_gpu(gpu).name} from {used.source}")


@app.command("calibrate")
def calibrate(
    source: str | None = typer.Option(
        None,
        "--source",
        "-s",
        help="aiconfigurator (its silicon database of today's stacks; the `calibrate` extra) or vidur "
        "(per-op profiles in Vidur's CSV format); default vidur when --profiles is given, else aiconfigurator.",
    ),
    system: list[str] = typer.Option(
        [],
        "--system",
        help="aiconfigurator system(s) to fit (h100_sxm, h200_sxm, a100_sxm, l40s, b200_sxm, h100_pcie, l4); "
        "repeat or comma-separate; default every one with data.",
    ),
    backend: str = typer.Option(
        "vllm", "--backend", "-b", help="aiconfigurator stack: vllm, sglang, trtllm."
    ),
    database: Path | None = typer.Option(
        None, "--database", help="aiconfigurator systems/data folder (default: the installed package's)."
    ),
    profiles: Path | None = typer.Option(
        None,
        "--profiles",
        "-p",
        help="With --source vidur: folder of per-op profiles (<family>/*.mlp.csv, network/*.csv); "
        "default ../shared/data/profiles.",
    ),
    output: Path = typer.Option(Path("calibration.json"), "--output", "-o", help="Where to write the JSON."),
) -> None:
    """Fit the cost model's efficiencies to measured data (reproduces the built-in calibrations: `--source
    aiconfigurator` is the default one, `--source vidur` the Vidur-profile one)."""
    source = source or ("vidur" if profiles else "aiconfigurator")
    if source == "aiconfigurator":
        from oserve.perf.aiconfigurator import calibrate_from_aiconfigurator

        systems = [x.strip() for item in system for x in item.split(",") if x.strip()] or None
        with console.status(f"fitting the cost model to aiconfigurator's {backend} database ..."):
            calib = calibrate_from_aiconfigurator(systems, backend, database)
    elif source == "vidur":
        root = profiles or default_profiles_dir()
        if root is None:
            raise CalibrationError("no --profiles given and ../shared/data/profiles not found")
        with console.status(f"fitting efficiencies to {root} ..."):
            calib = calibrate_from_profiles(root)
    else:
        raise typer.BadParameter(
            f"unknown source {source!r}; expected aiconfigurator or vidur", param_hint="--source"
        )
    calib.save(output)
    for key, fam in calib.families.items():
        ar = ", ".join(
            f"{n} GPUs {a * 1e6:.1f} us + {bw:.0f} GB/s"
            + (f" (>= {fam.allreduce_floor_s[n] * 1e6:.1f} us)" if n in fam.allreduce_floor_s else "")
            for n, (a, bw) in sorted(fam.allreduce.items())
        )
        console.print(
            f"[bold]{key}[/]: GEMM compute {fam.gemm_compute_eff['mlp_up_proj']:.2f} / memory "
            f"{fam.gemm_memory_eff['mlp_up_proj']:.2f} of peak, {fam.gemm_overhead_s * 1e6:.1f} us; "
            f"all-reduce {ar or '-'}"
            + (
                f", {fam.stack.allreduce_launch_s * 1e6:.0f} us launch"
                if fam.stack.allreduce_launch_s
                else ""
            )
            + f"; [dim]{fam.source}[/]"
        )
    console.print(f"wrote {output}")


@app.command("fit")
def fit(
    points: Path = typer.Argument(..., help="CSV: model,gpu,tp,pp,phase,num_seqs,length,seconds."),
    output: Path = typer.Option(..., "--output", "-o", help="Calibration JSON to write."),
    calibration: Path | None = typer.Option(None, "--calibration", "-c", help="Start from this calibration."),
) -> None:
    """Fit the serving stack's factors to measured iteration times; writes a calibration JSON."""
    data = read_points(points)
    result = fit_points(data, _calibration(calibration))
    result.calibration.save(output)
    table = Table(
        "GPU",
        "compute x",
        "memory x",
        "attention x",
        "comm x",
        "overhead ms",
        title=f"fitted on {result.num_points} points",
    )
    for name, f in result.factors.items():
        table.add_row(
            name,
            f"{f.compute_scale:.3f}",
            f"{f.memory_scale:.3f}",
            f"{f.attention_scale:.3f}",
            f"{f.comm_scale:.3f}",
            f"{f.iteration_overhead_s * 1e3:.3f}",
        )
    console.print(table)
    console.print(
        f"MAPE on the points: {result.mape_before:.1%} before, {result.mape_after:.1%} after; wrote {output}"
    )


@app.command("predict")
def predict(
    query: Path = typer.Argument(..., help="CSV: model,gpu,tp,pp,phase,num_seqs,length[,seconds]."),
    output: Path = typer.Option(..., "--output", "-o", help="CSV to write (rows + predicted_seconds)."),
    calibration: Path | None = typer.Option(
        None, "--calibration", "-c", help="Calibration JSON (default built-in)."
    ),
) -> None:
    """Predict iteration times for query rows; writes them back with a predicted_seconds column."""
    data = read_points(query, need_seconds=False)
    out = predict_points(data, _calibration(calibration))
    out.to_csv(output, index=False)
    console.print(f"predicted {len(out)} rows -> {output}")
    if "seconds" in out.columns:
        measured = out["seconds"].astype(str).str.strip()
        ok = measured != ""
        if ok.any():
            m = measured[ok].astype(float)
            err = (out.loc[ok, "predicted_seconds"] / m - 1).abs().mean()
            console.print(f"MAPE against the seconds column: {err:.1%}")

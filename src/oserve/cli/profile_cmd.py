"""``oserve profile``: measure per-op timings of one transformer layer with PyTorch on this machine."""

from __future__ import annotations

import re
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from oserve.cli.console import make_console
from oserve.errors import ConfigError
from oserve.spec import get_model

console = make_console()
err = make_console(stderr=True)


def parse_counts(text: str) -> tuple[int, ...]:
    """``"1,16,64"`` or ranges ``"256:4096:256"`` (inclusive, step) mixed with commas; sorted, unique."""
    out: set[int] = set()
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            if ":" in item:
                start, stop, *step = (int(x) for x in item.split(":"))
                if len(step) > 1 or (step and step[0] <= 0):
                    raise ValueError
                out.update(range(start, stop + 1, step[0] if step else 1))
            else:
                out.add(int(item))
        except ValueError as exc:
            raise ConfigError(
                f"bad count {item!r}: use integers or start:stop:step ranges, comma-separated"
            ) from exc
    if not out or min(out) <= 0:
        raise ConfigError(f"counts must be positive integers, got {text!r}")
    return tuple(sorted(out))


def parse_decode_points(text: str) -> tuple[tuple[int, int], ...]:
    """``"1x1024,16x2048"`` -> ((batch, context tokens), ...)."""
    points = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        match = re.fullmatch(r"(\d+)\s*[xX]\s*(\d+)", item)
        if not match or min(int(match[1]), int(match[2])) <= 0:
            raise ConfigError(f"bad decode point {item!r}: use BATCHxCONTEXT, e.g. 16x1024")
        points.append((int(match[1]), int(match[2])))
    return tuple(points)


def _fmt(ms: float) -> str:
    """Milliseconds to ~4 significant digits, narrow enough for an 80-column table."""
    return f"{ms:.3f}" if ms < 10 else f"{ms:.1f}" if ms < 1000 else f"{ms:.0f}"


def profile(
    model: str = typer.Argument(
        ..., help="Catalogue name (llama-3-8b, see `oserve spec models`) or a config.json path."
    ),
    tp: list[int] = typer.Option(
        [1], "--tp", help="Tensor-parallel degree to shard for; repeat for more (--tp 1 --tp 2)."
    ),
    tokens: str = typer.Option(
        "1,16,64,256,1024,4096",
        "--tokens",
        help="num_tokens per layer step: a comma list and/or start:stop:step ranges.",
    ),
    repeats: int | None = typer.Option(
        None, "--repeats", min=1, help="Timed layer steps per point (default: 20 on CUDA, 5 on CPU)."
    ),
    warmup: int | None = typer.Option(
        None, "--warmup", min=0, help="Untimed steps first (default: 2 on CUDA, 1 on CPU)."
    ),
    device: str = typer.Option("auto", "--device", help="auto | cuda | cpu."),
    dtype: str = typer.Option("auto", "--dtype", help="auto (bf16 on CUDA, fp32 on CPU), bf16, fp16, fp32"),
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        help="Folder for <model>.mlp.csv (+ .attention.csv, .profile.json), "
        "or the .csv path itself (default: profiles/<device>).",
    ),
    attention: bool = typer.Option(False, "--attention", help="Also time prefill and decode attention."),
    prefill_context: str = typer.Option(
        "128,512,2048", "--prefill-context", help="Prompt lengths for causal prefill attention (--attention)."
    ),
    decode: str = typer.Option(
        "1x1024,16x1024,64x2048", "--decode", help="BATCHxCONTEXT decode attention points (with --attention)."
    ),
    max_seconds: float | None = typer.Option(
        None,
        "--max-seconds",
        min=0,
        help="Time budget: skip points estimated to overrun it; 0: no limit (default: none on CUDA, 45 on CPU).",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for the random weights and inputs."),
    threads: int | None = typer.Option(
        None, "--threads", min=1, help="CPU only: intra-op threads (default: torch's, one per core)."
    ),
) -> None:
    """Measure per-operator GPU timings of one transformer layer and write them in Vidur's *.mlp.csv format.

    Times embedding, norms, QKV/O projections, rotary embedding, MLP up/act/down and the residual add for
    each (--tp, --tokens) point, sharded as tensor parallelism shards them, so `oserve perf calibrate
    --profiles DIR` can fit the cost model to your own GPUs. Needs PyTorch, the `profile` extra
    of oserve. Points that would overrun --max-seconds are skipped and listed: on a CPU (fp32) an 8B
    model gets its token counts up to 256-1024 within the default 45 s. See docs/profile.md.
    """
    from oserve.perf.profiler import ProfileSettings, device_tag, run, write_profile

    spec = get_model(model)
    if device not in ("auto", "cuda", "cpu"):
        raise ConfigError(f"--device must be auto, cuda or cpu, got {device!r}")
    settings = ProfileSettings(
        num_tokens=parse_counts(tokens),
        tp_degrees=tuple(dict.fromkeys(tp)),
        repeats=repeats,
        warmup=warmup,
        device=device,
        dtype=dtype,
        attention=attention,
        prefill_context_tokens=parse_counts(prefill_context),
        decode_points=parse_decode_points(decode),
        max_seconds=max_seconds,
        seed=seed,
        cpu_threads=threads,
    )
    total = len(settings.tp_degrees) * (
        len(settings.num_tokens)
        + (len(settings.prefill_context_tokens) + len(settings.decode_points) if attention else 0)
    )
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task(f"profiling {spec.name}", total=total)

        def advance(label: str) -> None:
            bar.update(task, advance=1, description=f"{spec.name} {label}")

        result = run(spec, settings, progress=advance)

    written = write_profile(result, output or Path("profiles") / device_tag(result))
    table = Table(
        "TP",
        "tokens",
        "QKV",
        "rope",
        "O",
        "MLP up",
        "act",
        "MLP down",
        "emb+norm+add",
        title=f"{result.model} on {result.device} ({result.dtype}, {result.timer}, "
        f"{result.repeats} repeats): mean ms per layer op",
    )
    shown = ("attn_pre_proj", "attn_rope", "attn_post_proj", "mlp_up_proj", "mlp_act", "mlp_down_proj")
    small = ("emb", "input_layernorm", "post_attention_layernorm", "add")
    for row in result.ops.to_dict("records"):

        def ms(op: str, row: dict = row) -> float:
            return float(row[f"time_stats.{op}.mean"])

        table.add_row(
            str(row["num_tensor_parallel_workers"]),
            str(row["num_tokens"]),
            *(_fmt(ms(op)) for op in shown),
            _fmt(sum(ms(op) for op in small)),
        )
    console.print(table)
    if result.attention is not None and len(result.attention):
        attn = Table("TP", "phase", "batch", "context", "mean ms", title="attention (one layer)")
        for row in result.attention.to_dict("records"):
            attn.add_row(
                str(row["num_tensor_parallel_workers"]),
                row["phase"],
                str(row["batch_size"]),
                str(row["context_tokens"]),
                _fmt(row["time_stats.attention.mean"]),
            )
        console.print(attn)
    if result.skipped:
        err.print(
            f"[yellow]skipped {len(result.skipped)} point(s) to stay within the time budget "
            f"(--max-seconds):[/] {'; '.join(result.skipped)}",
            highlight=False,
        )
    console.print(f"measured in {result.elapsed_s:.1f} s; wrote:", highlight=False)
    for path in written:
        console.print(f"  {path}", soft_wrap=True, highlight=False)

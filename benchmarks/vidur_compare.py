"""Vidur and OServe's simulator on the same trace and cluster, timed side by side in one run.

    python benchmarks/vidur_compare.py --vidur-src DIR --vidur-python PATH [--attention-from CSV]
                                       [--calibration default|vidur|both] [--traces ../shared/data/traces]
                                       [--work DIR] [--json OUT]

(``VIDUR_SRC``, ``VIDUR_PYTHON`` and ``VIDUR_ATTENTION_FROM`` in the environment stand for the three options.)

The full azure_conv_2023 hour (19,366 requests), Llama-2-70B on 4 replicas of H100 TP4 (``2x8xH100``),
round-robin routing, both simulators with Vidur's vLLM scheduler defaults (128 sequences, 4,096-token batches,
prefill-first, 16-token blocks, 10% memory margin). Prints wall seconds, simulated requests per wall second,
the speed ratio (Vidur wall / OServe wall) and TTFT/TPOT/E2E p50/p90/p99 of each run, and writes them to
benchmarks/results/vidur_compare.json. Vidur runs as a subprocess of its own interpreter with a warm predictor
cache (a short run first trains it when the cache is cold); its wall is the whole process, start-up and output
included, and its event loop alone is read from its log. OServe runs twice: on the trace as is (timed) and on
the lengths Vidur simulates (it clips each request to 4,096 tokens by cutting the prompt), for like-for-like
latencies. TPOT is (E2E - TTFT) / (output tokens - 1) for both, computed from Vidur's request_metrics.csv.

``--calibration`` picks OServe's cost model: ``default`` (the shipped calibration, today's vLLM from
aiconfigurator), ``vidur`` (``builtin_calibration("vidur")``, fitted to Vidur's own profiles by ``oserve perf
calibrate --source vidur``) or ``both`` (the default: OServe runs under each). Each OServe row comes with its
ratios to Vidur (OServe, clipped / Vidur) for TTFT, TPOT and E2E p50/p99.

Setting Vidur up (it is never an OServe dependency: keep it in a virtual environment of its own):

    git clone https://github.com/microsoft/vidur /tmp/vidur
    touch /tmp/vidur/vidur/__init__.py    # so this tree, not a pip-installed ``vidur``, is imported
    python3 -m venv /tmp/vidur-venv && /tmp/vidur-venv/bin/pip install -r /tmp/vidur/requirements.txt
    python benchmarks/vidur_compare.py --vidur-src /tmp/vidur --vidur-python /tmp/vidur-venv/bin/python

The pip release (``pip install vidur``) downloads its profiles at run time and does not run offline: use the
source. If it lacks ``data/profiling/compute/h100/meta-llama/Llama-2-70b-hf/attention.csv`` (snapshots without
its large files do), pass the A100 Llama-2-70B TP2 attention profile from Vidur's git history and the
benchmark derives an H100 TP4 one from it (approximate latencies, same speed; see ``derive_attention``):

    git -C /tmp/vidur show acb95f6:data/profiling/a100/attention.csv > /tmp/vidur-a100-attention.csv
    python benchmarks/vidur_compare.py ... --attention-from /tmp/vidur-a100-attention.csv
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from oserve.perf import Calibration, builtin_calibration
from oserve.sim import simulate
from oserve.spec import Deployment
from oserve.trace import Trace, load_trace
from sim_speed import MODEL, setup

VIDUR_MODEL = "meta-llama/Llama-2-70b-hf"
TP = 4
REPLICAS = 4
# Vidur's defaults (vidur/config/config.py): trace max_tokens, vLLM batch_size_cap and max_tokens_in_batch,
# memory_margin_fraction 0.1 (= OServe's gpu_memory_utilization 0.9); OServe is given the same knobs.
MAX_TOKENS = 4096
MAX_SEQS = 128
MAX_BATCH_TOKENS = 4096
ATTENTION_PATH = "data/profiling/compute/h100/meta-llama/Llama-2-70b-hf/attention.csv"
MLP_PATH = "data/profiling/compute/{gpu}/meta-llama/Llama-2-70b-hf/mlp.csv"
WARMUP_REQUESTS = 200
PREDICTOR = "--random_forrest_execution_time_predictor_config_"
# One random-forest combination and 2-fold CV: trains in ~20 s instead of ~25 min on 2 cores, latencies within
# 1% of the default 27-combination grid (shared/peers/VIDUR.md). The cache is keyed on these values.
FAST_GRID = [
    *(PREDICTOR + "num_estimators", "250"),
    *(PREDICTOR + "max_depth", "32"),
    *(PREDICTOR + "min_samples_split", "2"),
    *(PREDICTOR + "k_fold_cv_splits", "2"),
]
# Lean outputs: no plots (they need Chrome and fail at exit with status 0), no Chrome trace, no batch or
# utilization metrics; request_metrics.csv is kept.
LEAN = [
    "--no-metrics_config_store_plots",
    "--no-metrics_config_enable_chrome_trace",
    "--no-metrics_config_store_batch_metrics",
    "--no-metrics_config_store_utilization_metrics",
]
GEMM_OPS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")
METRICS = ("ttft", "tpot", "e2e")
PCTS = (50, 90, 99)
RATIO_KEYS = tuple(f"{m}_p{q}" for m in METRICS for q in (50, 99))
# --calibration names: OServe's built-in calibration each stands for
CALIBRATIONS = {"default": "vllm", "vidur": "vidur"}


class VidurUnavailable(Exception):
    """Vidur cannot run here; the message says why and what to do."""


def setup_help() -> str:
    steps = __doc__[__doc__.index("Setting Vidur up") :]
    given = "Vidur not given: pass --vidur-src DIR --vidur-python PATH (or set VIDUR_SRC, VIDUR_PYTHON)."
    return f"{given}\n\n{steps}"


def vidur_trace(trace: Trace) -> pd.DataFrame:
    """Vidur's trace-replay columns; arrivals rounded to the microsecond as in its ``splitwise_conv.csv``."""
    return pd.DataFrame(
        {
            "arrived_at": np.round(trace.arrival_s, 6),
            "num_prefill_tokens": trace.prompt_tokens,
            "num_decode_tokens": trace.output_tokens,
        }
    )


def same_requests(table: pd.DataFrame, theirs: Path) -> bool:
    """Whether ``theirs`` (Vidur's copy of the hour) has the same lengths, and arrivals within 1 us."""
    if not theirs.is_file():
        return False
    other = pd.read_csv(theirs)
    return (
        other.shape == table.shape
        and list(other.columns) == list(table.columns)
        and bool((other.iloc[:, 1:].to_numpy() == table.iloc[:, 1:].to_numpy()).all())
        and bool(np.abs(other["arrived_at"].to_numpy() - table["arrived_at"].to_numpy()).max() < 1e-6)
    )


def clip_like_vidur(trace: Trace, max_tokens: int = MAX_TOKENS) -> tuple[Trace, int]:
    """The lengths Vidur simulates (``TraceReplayRequestGenerator``): at least one token each, then the prompt
    cut so prompt + output <= ``max_tokens``. Returns the clipped trace and how many prompts were cut."""
    prompt = np.maximum(trace.prompt_tokens, 1)
    output = np.maximum(trace.output_tokens, 1)
    excess = np.maximum(prompt + output - max_tokens, 0)
    clipped = Trace.from_arrays(
        trace.arrival_s, prompt - excess, output, duration_s=trace.duration_s, name=f"{trace.name}-clipped"
    )
    return clipped, int((excess > 0).sum())


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def gemm_speedup(vidur_src: Path, lo: int, hi: int) -> float:
    """Median A100/H100 time ratio of Llama-2-70B's TP4 GEMMs (QKV, O, up, down summed) over ``lo..hi``
    tokens, from Vidur's own MLP profiles: ~1.8 where memory-bound (few tokens), ~3.1 where compute-bound."""
    key = ["num_tokens", "num_tensor_parallel_workers"]
    sums = []
    for gpu in ("a100", "h100"):
        df = pd.read_csv(vidur_src / MLP_PATH.format(gpu=gpu))
        df = df[(df["num_tensor_parallel_workers"] == TP) & df["num_tokens"].between(lo, hi)]
        sums.append(df[key].assign(t=sum(df[f"time_stats.{op}.median"] for op in GEMM_OPS)))
    both = sums[0].merge(sums[1], on=key, suffixes=("_a100", "_h100"))
    if both.empty:
        raise VidurUnavailable(f"no TP{TP} rows with {lo}..{hi} tokens in Vidur's Llama-2-70B MLP profiles")
    return float((both["t_a100"] / both["t_h100"]).median())


def derive_attention(a100_csv: Path, vidur_src: Path, out: Path) -> dict:
    """An H100 TP4 attention profile for Llama-2-70B from Vidur's A100 one (TP2, in its git history).

    Each phase keeps its launch floor (its fastest median) and scales the rest by the heads per GPU
    (source TP / 4) over the A100->H100 GEMM speedup in the same regime: compute-bound for prefill
    (1,024-4,096 tokens), memory-bound for decode (<= 32 tokens). Approximate: it moves Vidur's latencies,
    not its speed.
    """
    df = pd.read_csv(a100_csv)
    shape = (
        (df["n_embd"] == 8192) & (df["n_q_head"] == 64) & (df["n_kv_head"] == 8) & (df["block_size"] == 16)
    )
    tps = sorted(df.loc[shape, "num_tensor_parallel_workers"].unique())
    if not tps:
        raise VidurUnavailable(
            f"{a100_csv} has no Llama-2-70B rows (n_embd 8192, 64 q / 8 kv heads, block 16)"
        )
    src_tp = int(min(tps, key=lambda t: abs(t - TP)))
    df = df[shape & (df["num_tensor_parallel_workers"] == src_tp)].copy()
    heads = src_tp / TP
    speedup = {"prefill": gemm_speedup(vidur_src, 1024, 4096), "decode": gemm_speedup(vidur_src, 1, 32)}
    is_decode = df["prefill_chunk_size"] == 0
    floors = {}
    for phase, rows in (("prefill", ~is_decode), ("decode", is_decode)):
        scale = heads / speedup[phase]
        col = f"time_stats.attn_{phase}"
        floor = float(df.loc[rows, f"{col}.median"].min())
        for stat in ("min", "max", "mean", "median"):
            df.loc[rows, f"{col}.{stat}"] = floor + (df.loc[rows, f"{col}.{stat}"] - floor) * scale
        df.loc[rows, f"{col}.std"] *= scale
        floors[phase] = floor
    df["num_tensor_parallel_workers"] = TP
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    return {
        "kind": "substituted",
        "from": str(a100_csv),
        "from_sha256": file_digest(a100_csv),
        "from_gpu_tp": f"A100 TP{src_tp}",
        "heads_per_gpu_scale": heads,
        "a100_to_h100_speedup": speedup,
        "launch_floor_ms": floors,
        "rule": "t' = floor + (t - floor) * heads_per_gpu_scale / speedup, per phase",
    }


def attention_profile(vidur_src: Path, attention_from: Path | None, work: Path) -> tuple[Path, dict]:
    """Vidur's own H100 profile when its source has it, else one derived from ``attention_from``."""
    own = vidur_src / ATTENTION_PATH
    if own.is_file() and own.stat().st_size > 1_000_000:  # not a Git LFS pointer
        return own, {"kind": "Vidur's own H100 Llama-2-70B profile", "from": str(own)}
    if attention_from is None:
        raise VidurUnavailable(
            f"{own} is missing (snapshots of Vidur without its large files lack it). Pass --attention-from "
            "with the A100 Llama-2-70B profile from its git history:\n    git -C VIDUR_SRC show "
            "acb95f6:data/profiling/a100/attention.csv > /tmp/vidur-a100-attention.csv"
        )
    if not attention_from.is_file():
        raise VidurUnavailable(f"--attention-from {attention_from}: no such file")
    path = work / "attention_h100_tp4.csv"
    return path, derive_attention(attention_from, vidur_src, path)


def check_vidur(vidur_src: Path, vidur_python: Path) -> str:
    """Raise with the reason unless ``vidur_python`` imports Vidur from ``vidur_src``; returns the versions of
    Python, numpy, pandas and scikit-learn there (Vidur's speed depends on them)."""
    if not (vidur_src / "vidur" / "main.py").is_file():
        raise VidurUnavailable(
            f"--vidur-src {vidur_src}: no vidur/main.py (expected a microsoft/vidur checkout)"
        )
    if not os.access(vidur_python, os.X_OK):
        raise VidurUnavailable(f"--vidur-python {vidur_python}: not an executable")
    probe = (
        "import sys, numpy, pandas, sklearn, vidur, vidur.main; print(list(vidur.__path__)[0]); "
        "print(f'Python {sys.version.split()[0]}, numpy {numpy.__version__}, pandas {pandas.__version__}, '"
        "f'scikit-learn {sklearn.__version__}')"
    )
    done = subprocess.run(
        [str(vidur_python), "-c", probe],
        cwd=vidur_src,
        env=vidur_env(vidur_src),
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise VidurUnavailable(
            f"{vidur_python} cannot import Vidur from {vidur_src} (pip install -r requirements.txt there):\n"
            + done.stderr.strip()[-2000:]
        )
    where, versions = done.stdout.strip().splitlines()[-2:]
    if Path(where).resolve() != (vidur_src / "vidur").resolve():
        raise VidurUnavailable(
            f"{vidur_python} imports vidur from {where}, not {vidur_src}: add an empty "
            f"{vidur_src / 'vidur' / '__init__.py'} (or uninstall the pip package)"
        )
    return versions


def vidur_env(vidur_src: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return env | {"PYTHONPATH": str(vidur_src), "WANDB_MODE": "disabled"}


def vidur_args(trace_csv: Path, attention: Path, cache: Path, out_dir: Path) -> list[str]:
    return [
        *("--replica_config_model_name", VIDUR_MODEL),
        *("--replica_config_device", "h100", "--replica_config_network_device", "h100_dgx"),
        *("--replica_config_tensor_parallel_size", str(TP), "--replica_config_num_pipeline_stages", "1"),
        *("--cluster_config_num_replicas", str(REPLICAS)),
        *("--global_scheduler_config_type", "round_robin", "--replica_scheduler_config_type", "vllm"),
        *("--request_generator_config_type", "trace_replay"),
        *("--trace_request_generator_config_trace_file", str(trace_csv)),
        *(PREDICTOR + "attention_input_file", str(attention)),
        *FAST_GRID,
        *LEAN,
        *("--metrics_config_cache_dir", str(cache), "--metrics_config_output_dir", str(out_dir)),
    ]


def loop_seconds(log: str) -> float | None:
    """Seconds between Vidur's 'Starting simulation' and 'Simulation ended' log lines (1 s resolution)."""
    stamps = {}
    for line in log.splitlines():
        m = re.match(r"\w+ (\d\d-\d\d \d\d:\d\d:\d\d) .*(Starting simulation|Simulation ended)", line)
        if m:
            stamps[m.group(2)] = datetime.strptime(m.group(1), "%m-%d %H:%M:%S")
    if len(stamps) < 2:
        return None
    return (stamps["Simulation ended"] - stamps["Starting simulation"]).total_seconds() % 86400


def run_vidur(
    vidur_src: Path, vidur_python: Path, trace_csv: Path, attention: Path, cache: Path, out_dir: Path
) -> dict:
    """One Vidur run; its wall seconds, loop seconds and request_metrics.csv. Judged by its files: Vidur
    writes its outputs at exit and can fail there with status 0."""
    shutil.rmtree(out_dir, ignore_errors=True)
    cmd = [str(vidur_python), "-m", "vidur.main", *vidur_args(trace_csv, attention, cache, out_dir)]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=vidur_src, env=vidur_env(vidur_src), capture_output=True, text=True)
    wall = time.perf_counter() - start
    log = done.stdout + done.stderr
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vidur.log").write_text(log)
    metrics = sorted(out_dir.glob("*/request_metrics.csv"))
    if done.returncode != 0 or not metrics:
        raise VidurUnavailable(
            f"Vidur exited {done.returncode}{'' if metrics else ' without request_metrics.csv'}; "
            f"log in {out_dir / 'vidur.log'}, last lines:\n" + "\n".join(log.strip().splitlines()[-15:])
        )
    return {"wall_s": wall, "loop_s": loop_seconds(log), "metrics_csv": metrics[-1], "command": cmd}


def vidur_latency(metrics_csv: Path) -> tuple[dict, pd.DataFrame]:
    """TTFT / TPOT / E2E percentiles (seconds) from Vidur's per-request metrics, OServe's definitions."""
    df = pd.read_csv(metrics_csv)
    ttft = df["prefill_e2e_time"].to_numpy()
    e2e = df["request_e2e_time"].to_numpy()
    out_tokens = df["request_num_decode_tokens"].to_numpy()
    multi = out_tokens > 1
    tpot = (e2e - ttft)[multi] / (out_tokens[multi] - 1)
    lat = {
        f"{name}_p{q}": float(np.percentile(v, q))
        for name, v in zip(METRICS, (ttft, tpot, e2e), strict=True)
        for q in PCTS
    }
    return lat, df


def calibrations_for(choice: str) -> list[str]:
    """The ``--calibration`` names to run: one, or ``both`` in order default, vidur."""
    if choice == "both":
        return list(CALIBRATIONS)
    if choice not in CALIBRATIONS:
        raise ValueError(f"unknown calibration {choice!r}; expected default, vidur or both")
    return [choice]


def ratios(oserve_latency: dict, vidur_latency: dict) -> dict:
    """OServe / Vidur for TTFT, TPOT and E2E p50 and p99."""
    return {k: oserve_latency[k] / vidur_latency[k] for k in RATIO_KEYS}


def run_oserve(trace: Trace, calibration: Calibration | None = None) -> dict:
    """OServe's simulator with Vidur's scheduler knobs; wall seconds of ``simulate`` and its summary."""
    model, cluster, _, base = setup()
    config = dataclasses.replace(base, max_num_seqs=MAX_SEQS, max_num_batched_tokens=MAX_BATCH_TOKENS)
    dep = Deployment.homogeneous(MODEL, cluster, config, REPLICAS)
    start = time.perf_counter()
    res = simulate(
        trace, dep, model, cluster, router="round-robin", chunked_prefill=False, calibration=calibration
    )
    wall = time.perf_counter() - start
    s = res.summary
    return {
        "wall_s": wall,
        "requests_per_wall_s": len(trace) / wall,
        "latency": {f"{m}_p{q}": s[f"{m}_p{q}"] for m in METRICS for q in PCTS},
        "completed": s["completed"],
        "dropped": s["dropped"],
        "preemptions": s["preemptions"],
        "replicas": f"{REPLICAS} x {config.label}",
    }


def notes_for(
    n_requests: int, n_clipped: int, cold: dict | None, same_trace: bool, attention: dict
) -> list[str]:
    """What a reader needs to judge the comparison: clipping, cache, predictor, trace, attention profile."""
    notes = [
        f"Vidur clips each request to {MAX_TOKENS:,} tokens by cutting its prompt: {n_clipped:,} requests "
        f"({n_clipped / n_requests:.1%}) lose prompt tokens. 'OServe, clipped' runs OServe on those lengths.",
        "Vidur timed with a warm predictor cache"
        + ("." if cold is None else f" (this run warmed it first: {cold['wall_s']:.1f} s cold run)."),
        "Vidur's predictor: random forest, one combination (250 trees, depth 32, min split 2), 2-fold CV; "
        "lean outputs.",
        "The converted trace "
        + (
            "is Vidur's own splitwise_conv.csv (same lengths, arrivals within 1 us)."
            if same_trace
            else "differs from Vidur's splitwise_conv.csv."
        ),
    ]
    if attention["kind"] != "substituted":
        return [*notes, f"Attention profile: {attention['kind']}."]
    sp = attention["a100_to_h100_speedup"]
    return [
        *notes,
        f"Attention profile substituted (Vidur's H100 one is missing): its {attention['from_gpu_tp']} "
        f"Llama-2-70B profile ({attention['from']}) scaled to H100 TP{TP}: heads per GPU "
        f"x{attention['heads_per_gpu_scale']:g}, A100->H100 speedup {sp['prefill']:.2f} (prefill) / "
        f"{sp['decode']:.2f} (decode) from Vidur's GEMM profiles, launch floors kept. Vidur's latencies "
        "are approximate; its speed is not affected.",
    ]


def compare(
    path: Path,
    src: Path,
    vidur_python: Path,
    attention_from: Path | None,
    work: Path,
    calibrations: list[str] | None = None,
) -> dict:
    """Both simulators on the hour at ``path``, OServe under each of ``calibrations`` (``--calibration``
    names, default both); the JSON document. Raises ``VidurUnavailable``."""
    calibrations = calibrations or list(CALIBRATIONS)
    versions = check_vidur(src, vidur_python)
    work.mkdir(parents=True, exist_ok=True)
    attention, provenance = attention_profile(src, attention_from, work)
    provenance["file"] = str(attention)
    real = load_trace(path)
    table = vidur_trace(real)
    trace_csv = work / "azure_conv_2023.vidur.csv"
    table.to_csv(trace_csv, index=False)

    # Vidur keys its prediction cache on the predictor config, not on the profile's contents: one cache
    # folder per attention profile, so a changed profile is never answered from a stale cache.
    cache = work / "cache" / file_digest(attention)[:12]
    cold = None
    if not (cache / ".warm").is_file():
        warm_csv = work / "warmup.vidur.csv"
        table.head(WARMUP_REQUESTS).to_csv(warm_csv, index=False)
        print(
            f"Vidur's predictor cache is cold: training it on a {WARMUP_REQUESTS}-request run ...", flush=True
        )
        cold = run_vidur(src, vidur_python, warm_csv, attention, cache, work / "out/warmup")
        (cache / ".warm").touch()
        print(f"  cold run {cold['wall_s']:.1f} s")
    print(f"Vidur: {len(real):,} requests ...", flush=True)
    vidur = run_vidur(src, vidur_python, trace_csv, attention, cache, work / "out/timed")
    latency, per_request = vidur_latency(vidur["metrics_csv"])

    clipped, n_clipped = clip_like_vidur(real)
    runs = {}
    for name in calibrations:
        print(f"OServe, {name} calibration ...", flush=True)
        calibration = builtin_calibration(CALIBRATIONS[name])
        full, short = run_oserve(real, calibration), run_oserve(clipped, calibration)
        runs[name] = {
            "calibration": f"builtin_calibration({CALIBRATIONS[name]!r}): {calibration.note}",
            "oserve": full,
            "oserve_clipped": short,
            "ratio_to_vidur": ratios(short["latency"], latency),
        }
    oserve = runs[calibrations[0]]["oserve"]
    same_trace = same_requests(table, src / "data/processed_traces/splitwise_conv.csv")
    return {
        "setup": {
            "model": MODEL,
            "cluster": "2x8xH100",
            "replicas": oserve["replicas"],
            "router": "round-robin",
            "trace": path.name,
            "requests": len(real),
            "duration_s": real.duration_s,
            "scheduler": {
                "max_num_seqs": MAX_SEQS,
                "max_num_batched_tokens": MAX_BATCH_TOKENS,
                "chunked_prefill": False,
                "block_size": 16,
                "gpu_memory_utilization": 0.9,
            },
        },
        "vidur": {
            "wall_s": vidur["wall_s"],
            "requests_per_wall_s": len(real) / vidur["wall_s"],
            "loop_wall_s": vidur["loop_s"],
            "cold_run_wall_s": None if cold is None else cold["wall_s"],
            "latency": latency,
            "completed": len(per_request),
            "restarts": int(per_request["request_num_restarts"].sum()),
            "clipped_requests": n_clipped,
            "attention_profile": provenance,
            "environment": versions,
            "command": vidur["command"],
            "request_metrics_csv": str(vidur["metrics_csv"]),
        },
        "oserve_by_calibration": runs,
        "speed_ratio": vidur["wall_s"] / oserve["wall_s"],
        "speed_ratio_calibration": calibrations[0],
        "notes": notes_for(len(real), n_clipped, cold, same_trace, provenance),
    }


def print_report(out: dict) -> None:
    conf, vidur, runs = out["setup"], out["vidur"], out["oserve_by_calibration"]
    print(
        f"\n{conf['trace']}: {conf['requests']:,} requests over {conf['duration_s']:,.0f} s; "
        f"{conf['model']}, {conf['replicas']} ({conf['cluster']}), {conf['router']}"
    )
    print(
        f"both: vLLM scheduler, {MAX_SEQS} seqs, {MAX_BATCH_TOKENS:,}-token batches, prefill-first, 16-token "
        "blocks, 10% memory margin"
    )
    columns = {"Vidur": vidur}
    for name, run in runs.items():
        columns[f"OServe/{name}"] = run["oserve"]
        columns[f"clipped/{name}"] = run["oserve_clipped"]
    width = max(12, *(len(n) + 2 for n in columns))
    print(f"\n  {'':<20}" + "".join(f"{n:>{width}}" for n in columns))
    rows = [("wall s", "wall_s", 1, "{:,.1f}"), ("requests / wall s", "requests_per_wall_s", 1, "{:,.0f}")]
    rows += [(f"{m.upper()} p{q} {'s' if m == 'e2e' else 'ms'}", f"{m}_p{q}", 1 if m == "e2e" else 1e3,
              "{:,.2f}" if m == "e2e" else "{:,.1f}") for m in METRICS for q in PCTS]  # fmt: skip
    for label, key, scale, fmt in rows:
        cells = (col.get(key, col["latency"].get(key)) for col in columns.values())
        print(f"  {label:<20}" + "".join(f"{fmt.format(v * scale):>{width}}" for v in cells))
    print("\n  OServe (clipped) / Vidur:")
    print(f"  {'':<20}" + "".join(f"{k:>10}" for k in RATIO_KEYS))
    for name, run in runs.items():
        cells = "".join(f"{run['ratio_to_vidur'][k]:>10.3f}" for k in RATIO_KEYS)
        print(f"  {name + ' calibration':<20}" + cells)
    oserve = runs[out["speed_ratio_calibration"]]["oserve"]
    loop = vidur["loop_wall_s"]
    loop_note = (
        "" if loop is None else f"; its event loop alone ~{loop:.0f} s, {loop / oserve['wall_s']:.1f}x"
    )
    print(
        f"\n  speed: Vidur wall / OServe wall = {out['speed_ratio']:.1f}x (OServe under the "
        f"{out['speed_ratio_calibration']} calibration; Vidur's whole process{loop_note})"
    )
    done = ", ".join(
        f"{name} {run['oserve']['completed']:,} ({run['oserve']['preemptions']} preemptions, "
        f"{run['oserve']['dropped']} dropped)"
        for name, run in runs.items()
    )
    print(f"  completed: Vidur {vidur['completed']:,} ({vidur['restarts']} restarts); OServe {done}")
    print(f"  Vidur's environment: {vidur['environment']}")
    for note in out["notes"]:
        print(f"  - {note}")


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vidur-src", type=Path, default=env("VIDUR_SRC"), help="a microsoft/vidur checkout")
    p.add_argument("--vidur-python", type=Path, default=env("VIDUR_PYTHON"), help="its venv's python")
    p.add_argument(
        "--attention-from",
        type=Path,
        default=env("VIDUR_ATTENTION_FROM"),
        help="Vidur's A100 Llama-2-70B attention.csv, when its source lacks the H100 one",
    )
    p.add_argument(
        "--calibration",
        choices=("default", "vidur", "both"),
        default="both",
        help="OServe's cost model: the shipped default (aiconfigurator), Vidur's profiles, or both (default)",
    )
    p.add_argument("--traces", type=Path, default=here.parents[1] / "shared/data/traces")
    p.add_argument("--work", type=Path, default=here / "results/vidur", help="trace, cache, Vidur outputs")
    p.add_argument("--json", type=Path, default=here / "results/vidur_compare.json")
    args = p.parse_args(argv)
    if args.vidur_src is None or args.vidur_python is None:
        print(setup_help(), file=sys.stderr)
        return 2
    path = args.traces / "azure_conv_2023.csv"
    if not path.is_file():
        print(f"trace not found: {path}", file=sys.stderr)
        return 1
    try:
        out = compare(
            path,
            args.vidur_src.resolve(),
            args.vidur_python.absolute(),  # a venv's python is a symlink: keep the venv's path
            args.attention_from,
            args.work.resolve(),
            calibrations_for(args.calibration),
        )
    except VidurUnavailable as exc:
        print(f"Vidur cannot run: {exc}", file=sys.stderr)
        return 1
    print_report(out)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2, default=str))
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

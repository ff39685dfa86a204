"""How fast the simulator replays traffic (one core).

    python benchmarks/sim_speed.py [--traces ../shared/data/traces] [--json benchmarks/results/sim_speed.json]
                                   [--million] [--profile] [--hour-only]
                                   [--baseline CHECKOUT [--rounds 2] [--instructions [--instructions-minutes 10]]]

1. The full azure_conv_2023 hour (19,366 requests) on 4 replicas of Llama-2-70B TP4 on a 2x8xH100 cluster,
   round-robin routing: wall and process CPU seconds (``time.process_time``: what a shared machine's other load
   inflates least), simulated requests per wall second and the run's summary. Target <= 15 s.
   With ``--baseline`` (another checkout of OServe, e.g. ``git worktree add --detach /tmp/sim-base 0e56953``) the
   hour also runs in fresh processes, the baseline's ``src`` then this checkout's, alternating for ``--rounds``
   rounds (baseline, this, baseline, this, ...); the best of each and their ratio are printed and written.
   ``--instructions`` (with ``--baseline``; needs valgrind) also counts the instructions the first
   ``--instructions-minutes`` (10) of the hour take to simulate on each (cachegrind, each run less the same process
   without the simulation): a count the machine's other load does not change, unlike the times.
2. Scaling: 1k / 10k / 100k (and with --million 1M) synthetic requests, lengths resampled from the real trace with
   a seeded Generator, Poisson arrivals at 70% of the 4 replicas' throughput bound
   (``CostModel.throughput_bound_rps`` at the trace's mean lengths), with the process's peak resident memory after
   each size (sizes run smallest first, so it is that size's peak once it exceeds the earlier ones').
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from oserve.perf import CostModel
from oserve.sim import simulate
from oserve.spec import Deployment, ReplicaConfig, get_gpu, get_model, parse_cluster
from oserve.trace import Trace, load_trace

MODEL = "Llama-2-70b-hf"
LOAD = 0.7


def setup():
    cluster = parse_cluster("2x8xH100")
    config = ReplicaConfig(get_gpu("h100"), tp=4)
    return get_model(MODEL), cluster, Deployment.homogeneous(MODEL, cluster, config, 4), config


def synthetic(real: Trace, n: int, rate_rps: float, seed: int) -> Trace:
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(real), n)
    arrival = np.cumsum(rng.exponential(1.0 / rate_rps, n))
    return Trace.from_arrays(
        arrival - arrival[0], real.prompt_tokens[pick], real.output_tokens[pick], name=f"synthetic-{n}"
    )


def timed(trace: Trace, model, cluster, dep) -> tuple[float, float, dict]:
    """(wall s, process CPU s, summary) of one round-robin run."""
    cpu, start = time.process_time(), time.perf_counter()
    res = simulate(trace, dep, model, cluster, router="round-robin")
    return time.perf_counter() - start, time.process_time() - cpu, res.summary


def hour_in_process(traces: Path, src: Path) -> dict:
    """The hour in a fresh interpreter importing OServe from ``src``: its wall, CPU and completed count."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--traces", str(traces), "--child"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def instructions(traces: Path, src: Path, minutes: float) -> int:
    """Instructions (cachegrind's ``I refs``) simulating the hour's first ``minutes`` with OServe from ``src``:
    a child process that simulates less one that stops before it."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    counts = []
    with tempfile.TemporaryDirectory() as tmp:
        for extra in (["--no-sim"], []):
            cmd = [
                "valgrind",
                "--tool=cachegrind",
                "--cache-sim=no",
                f"--cachegrind-out-file={tmp}/cg.out",
                sys.executable,
                str(Path(__file__).resolve()),
                "--traces",
                str(traces),
                "--child",
                "--minutes",
                str(minutes),
                *extra,
            ]
            err = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stderr
            counts.append(int(re.search(r"I\s+refs:\s+([\d,]+)", err).group(1).replace(",", "")))
    return counts[1] - counts[0]


def compare_instructions(traces: Path, baseline: Path, minutes: float) -> dict:
    here = Path(__file__).resolve().parents[1] / "src"
    got = {
        label: instructions(traces, src, minutes)
        for label, src in (("baseline", baseline / "src"), ("this", here))
    }
    ratio = got["this"] / got["baseline"]
    print(
        f"  instructions simulating the first {minutes:g} min: baseline {got['baseline']:,}, this "
        f"{got['this']:,}; ratio {ratio:.3f}"
    )
    return {"minutes": minutes, **got, "ratio": ratio}


def compare_baseline(traces: Path, baseline: Path, rounds: int) -> dict:
    """The hour alternately on the baseline checkout and this one (fresh processes), best of each."""
    here = Path(__file__).resolve().parents[1] / "src"
    runs: dict[str, list[dict]] = {"baseline": [], "this": []}
    for _ in range(rounds):
        for label, src in (("baseline", baseline / "src"), ("this", here)):
            row = hour_in_process(traces, src)
            runs[label].append(row)
            print(
                f"  {label:<9} wall {row['wall_s']:6.2f} s   cpu {row['cpu_s']:6.2f} s   "
                f"completed {row['completed']:,}",
                flush=True,
            )
    best = {k: {m: min(r[m] for r in v) for m in ("wall_s", "cpu_s")} for k, v in runs.items()}
    ratio = {m: best["this"][m] / best["baseline"][m] for m in ("wall_s", "cpu_s")}
    print(
        f"  best: baseline wall {best['baseline']['wall_s']:.2f} s / cpu {best['baseline']['cpu_s']:.2f} s, "
        f"this wall {best['this']['wall_s']:.2f} s / cpu {best['this']['cpu_s']:.2f} s; "
        f"ratio wall {ratio['wall_s']:.3f}, cpu {ratio['cpu_s']:.3f}"
    )
    return {"baseline_src": str(baseline), "rounds": rounds, "runs": runs, "best": best, "ratio": ratio}


def peak_rss_mb() -> float:
    """The process's peak resident set so far (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--traces", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/traces")
    p.add_argument("--json", type=Path, default=Path(__file__).resolve().parent / "results/sim_speed.json")
    p.add_argument("--million", action="store_true", help="also run 1M requests")
    p.add_argument(
        "--profile", action="store_true", help="cProfile the full-hour run, print the top functions"
    )
    p.add_argument(
        "--hour-only", action="store_true", help="the hour (and --baseline) only, no scaling sizes"
    )
    p.add_argument(
        "--baseline", type=Path, help="another OServe checkout: run the hour on it and here, alternating"
    )
    p.add_argument("--rounds", type=int, default=2, help="baseline/this rounds with --baseline (default 2)")
    p.add_argument(
        "--instructions", action="store_true", help="with --baseline: cachegrind instruction counts too"
    )
    p.add_argument(
        "--instructions-minutes", type=float, default=10.0, help="minutes of the hour counted (default 10)"
    )
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # one hour, a JSON line
    p.add_argument("--minutes", type=float, help=argparse.SUPPRESS)  # the child: the hour's first minutes
    p.add_argument(
        "--no-sim", action="store_true", help=argparse.SUPPRESS
    )  # the child: stop before simulating
    args = p.parse_args(argv)
    path = args.traces / "azure_conv_2023.csv"
    if not path.is_file():
        print(f"trace not found: {path}", file=sys.stderr)
        return 1
    model, cluster, dep, config = setup()
    real = load_trace(path)
    if args.child:
        if args.minutes is not None:
            real = real.take(real.arrival_s < args.minutes * 60, duration_s=args.minutes * 60)
        if args.no_sim:
            return 0
        wall, cpu, summary = timed(real, model, cluster, dep)
        print(json.dumps({"wall_s": wall, "cpu_s": cpu, "completed": summary["completed"]}))
        return 0

    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        simulate(real, dep, model, cluster, router="round-robin")
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)

    wall, cpu, summary = timed(real, model, cluster, dep)
    print(
        f"azure_conv_2023: {len(real):,} requests, {real.duration_s:.0f} s simulated, 4 x {config.label}, "
        f"round-robin"
    )
    print(
        f"  wall {wall:.2f} s   cpu {cpu:.2f} s   {len(real) / wall:,.0f} requests/s   "
        f"{real.duration_s / wall:,.0f}x real time"
    )
    for key in (
        "completed",
        "dropped",
        "preemptions",
        "ttft_p50",
        "ttft_p99",
        "tpot_p50",
        "tpot_p99",
        "e2e_p50",
        "e2e_p99",
        "throughput_rps",
        "tokens_per_s",
        "goodput_rps",
        "slo_attainment",
        "gpu_seconds",
    ):
        v = summary[key]
        print(f"  {key:<16} {v:,.4g}" if isinstance(v, float) else f"  {key:<16} {v:,}")

    baseline = None
    if args.baseline is not None:
        print(f"\nthe hour in fresh processes, {args.baseline} vs this checkout, {args.rounds} rounds")
        baseline = compare_baseline(args.traces, args.baseline, args.rounds)
        if args.instructions:
            baseline["instructions"] = compare_instructions(
                args.traces, args.baseline, args.instructions_minutes
            )

    bound = CostModel(model, config).throughput_bound_rps(
        float(real.prompt_tokens.mean()), float(real.output_tokens.mean())
    )
    rate = LOAD * 4 * bound
    sizes = [] if args.hour_only else [1_000, 10_000, 100_000] + ([1_000_000] if args.million else [])
    scaling = []
    if sizes:
        print(
            f"\nscaling: Poisson at {rate:.2f} req/s ({LOAD:.0%} of 4 x {bound:.2f} req/s bound), "
            f"resampled lengths"
        )
        print(
            f"  {'requests':>10} {'sim s':>10} {'wall s':>8} {'cpu s':>8} {'req/wall s':>11} {'ttft p99':>9} "
            f"{'tpot p50':>9} {'peak MB':>8}"
        )
    for n in sizes:
        trace = synthetic(real, n, rate, seed=n)
        w, c, s = timed(trace, model, cluster, dep)
        rss = peak_rss_mb()
        row = {
            "requests": n,
            "simulated_s": s["span_s"],
            "wall_s": w,
            "cpu_s": c,
            "requests_per_wall_s": n / w,
            "ttft_p99": s["ttft_p99"],
            "tpot_p50": s["tpot_p50"],
            "preemptions": s["preemptions"],
            "peak_rss_mb": rss,
        }
        scaling.append(row)
        print(
            f"  {n:>10,} {s['span_s']:>10,.0f} {w:>8.2f} {c:>8.2f} {n / w:>11,.0f} {s['ttft_p99']:>9.3f} "
            f"{s['tpot_p50']:>9.4f} {rss:>8,.0f}"
        )

    out = {
        "setup": {
            "model": MODEL,
            "cluster": cluster.name,
            "replicas": f"4 x {config.label}",
            "router": "round-robin",
            "trace": str(path.name),
        },
        "full_hour": {
            "requests": len(real),
            "wall_s": wall,
            "cpu_s": cpu,
            "requests_per_wall_s": len(real) / wall,
            "target_wall_s": 15.0,
            "summary": summary,
        },
        "baseline": baseline,
        "scaling": {"rate_rps": rate, "load": LOAD, "rows": scaling},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2, default=float))
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

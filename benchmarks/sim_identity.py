"""Whether two checkouts' simulators give the same outputs, exactly, on ten cases (for speed work).

    python benchmarks/sim_identity.py --baseline CHECKOUT [--traces ../shared/data/traces]
                                      [--json benchmarks/results/sim_identity.json] [--cases NAME ...]

Each case runs in a fresh process with OServe from ``CHECKOUT/src`` and from this checkout; the per-request
records, per-replica table, summary, switches and migrations must be equal (NaN equal to NaN, floats bit for bit).
Cases: the Azure conversation and code hours on 4 x Llama-2-70B TP4 (2x8xH100, round-robin); 20 minutes of conv
under least-tokens (the online view's outstanding tokens), under allowed-least-load with the true lengths, 10 under
llumnix (migrations); pipeline parallel 2 x TP4PP2 on 20 minutes of conv (round-robin) and of code
(allowed-least-load); the Mooncake synthetic trace blended with conv (5 minutes, long prompts, prefix hashes) on
4 x Llama-3.1-8B TP2 round-robin and prefix-aware, and at half rate on 2 x TP2PP2. Prints each case's CPU seconds
on both sides and the verdict; exits 1 when any case differs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

CASES = (
    "conv-rr",
    "code-rr",
    "conv-least-tokens-20m",
    "conv-oracle-least-load-20m",
    "conv-llumnix-10m",
    "conv-pp-rr-20m",
    "code-pp-least-load-20m",
    "mix-8b-rr-5m",
    "mix-8b-prefix-5m",
    "mix-8b-pp-least-load-5m",
)


def run_case(name: str, traces: Path):
    from oserve.sim import simulate
    from oserve.spec import Deployment, ReplicaConfig, get_gpu, get_model, parse_cluster
    from oserve.trace import blend, load_trace, scale_rate, window

    h100 = get_gpu("h100")
    if name.startswith("mix"):
        conv = load_trace(traces / "azure_conv_2023.csv")
        mix = window(
            blend([load_trace(traces / "mooncake_synthetic.jsonl"), conv], seed=0, name="mix"), 0.0, 300
        )
        model, cluster = get_model("llama-3.1-8b"), parse_cluster("1x8xH100")
        if name == "mix-8b-pp-least-load-5m":
            dep = Deployment.homogeneous(model.name, cluster, ReplicaConfig(h100, tp=2, pp=2), 2)
            return simulate(scale_rate(mix, 0.5, seed=0), dep, model, cluster, router="allowed-least-load")
        dep = Deployment.homogeneous(model.name, cluster, ReplicaConfig(h100, tp=2), 4)
        router = "prefix-aware" if name == "mix-8b-prefix-5m" else "round-robin"
        return simulate(mix, dep, model, cluster, router=router)
    trace = load_trace(traces / ("azure_code_2023.csv" if name.startswith("code") else "azure_conv_2023.csv"))
    model, cluster = get_model("Llama-2-70b-hf"), parse_cluster("2x8xH100")
    if "-pp-" in name:
        dep = Deployment.homogeneous(model.name, cluster, ReplicaConfig(h100, tp=4, pp=2), 2)
    else:
        dep = Deployment.homogeneous(model.name, cluster, ReplicaConfig(h100, tp=4), 4)
    options = {
        "conv-rr": dict(router="round-robin"),
        "code-rr": dict(router="round-robin"),
        "conv-least-tokens-20m": dict(router="least-tokens", duration_s=1200),
        "conv-oracle-least-load-20m": dict(router="allowed-least-load", duration_s=1200, oracle_lengths=True),
        "conv-llumnix-10m": dict(router="llumnix", duration_s=600),
        "conv-pp-rr-20m": dict(router="round-robin", duration_s=1200),
        "code-pp-least-load-20m": dict(router="allowed-least-load", duration_s=1200),
    }[name]
    return simulate(trace, dep, model, cluster, **options)


def same(a, b) -> bool:
    """Equal outputs: frames exactly (dtypes too), containers element by element, NaN equal to NaN."""
    if isinstance(a, pd.DataFrame) or isinstance(b, pd.DataFrame):
        if not (isinstance(a, pd.DataFrame) and isinstance(b, pd.DataFrame)):
            return False
        try:
            pd.testing.assert_frame_equal(a, b, check_exact=True)
        except AssertionError:
            return False
        return True
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return (
            isinstance(b, list | tuple)
            and len(a) == len(b)
            and all(same(x, y) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return bool(a == b)


def child(cases: list[str], traces: Path, out: Path) -> None:
    results = {}
    for name in cases:
        start = time.process_time()
        r = run_case(name, traces)
        results[name] = {
            "cpu_s": time.process_time() - start,
            "outputs": (r.records, r.replicas, r.summary, r.switches, r.migrations),
        }
    out.write_bytes(pickle.dumps(results))


def outputs_of(src: Path, cases: list[str], traces: Path, tmp: Path, label: str) -> dict:
    out = tmp / f"{label}.pkl"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--traces",
        str(traces),
        "--child",
        str(out),
        "--cases",
    ]
    subprocess.run([*cmd, *cases], env={**os.environ, "PYTHONPATH": str(src)}, check=True)
    return pickle.loads(out.read_bytes())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", type=Path, help="the other OServe checkout")
    p.add_argument("--traces", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/traces")
    p.add_argument("--json", type=Path, default=Path(__file__).resolve().parent / "results/sim_identity.json")
    p.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    p.add_argument(
        "--child", type=Path, help=argparse.SUPPRESS
    )  # run the cases here, pickle the outputs there
    args = p.parse_args(argv)
    if args.child is not None:
        child(args.cases, args.traces, args.child)
        return 0
    if args.baseline is None:
        p.error("--baseline CHECKOUT is required")
    if not (args.traces / "mooncake_synthetic.jsonl").is_file():
        print(f"traces not found in {args.traces}", file=sys.stderr)
        return 1
    here = Path(__file__).resolve().parents[1] / "src"
    with tempfile.TemporaryDirectory() as tmp:
        base = outputs_of(args.baseline / "src", args.cases, args.traces, Path(tmp), "baseline")
        this = outputs_of(here, args.cases, args.traces, Path(tmp), "this")
    rows = []
    print(f"{'case':<28} {'baseline cpu s':>14} {'this cpu s':>11}  outputs")
    for name in args.cases:
        equal = same(base[name]["outputs"], this[name]["outputs"])
        rows.append(
            {
                "case": name,
                "baseline_cpu_s": base[name]["cpu_s"],
                "cpu_s": this[name]["cpu_s"],
                "identical": equal,
            }
        )
        print(
            f"{name:<28} {base[name]['cpu_s']:>14.2f} {this[name]['cpu_s']:>11.2f}  "
            f"{'identical' if equal else 'DIFFERENT'}"
        )
    ok = all(r["identical"] for r in rows)
    print("all identical" if ok else "outputs differ")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps({"baseline": str(args.baseline), "cases": rows, "identical": ok}, indent=2)
    )
    print(f"wrote {args.json}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

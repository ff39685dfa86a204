"""Disaggregated prefill/decode against aggregated serving: goodput per GPU at the SLA, simulated.

    python benchmarks/disagg.py [--traces ../shared/data/traces] [--requests 600] [--seconds 20] [--no-aiconfigurator]
                                [--json benchmarks/results/disagg.json]

Setups: Llama-3.1-8B on 1x8xH100 and Llama-3.1-70B on 2x8xH100. Length mixes (ISL/OSL) from the real traces:
the first ``--requests`` x 3 requests of the Azure 2023 code hour, of the conversation hour and of the Mooncake
synthetic trace, replayed as Poisson arrivals (as ``planner.validate.simulated_rate`` does, each probe at least
``--seconds`` of arrivals so that queues reach their steady state). Two SLAs per setup: loose
(TPOT 100 ms) and tight TPOT; TTFT is length-aware (a base plus seconds per prompt token) in both.

The figure is the highest rate at which a deployment keeps 90% of requests within the SLA (bisection on the rate,
each probe a simulation), per GPU, for

- ``agg``: the best aggregated shape (every pp-1 TP, packed on the whole cluster, each measured);
- ``pd``: the best P/D pool (the top pool shapes by the pool capacity model and Dynamo's, each measured);
- ``dynamo``: Dynamo's SLA planner's pool (``planner.dynamo``);
- ``oserve``: OServe's plan, aggregated, P/D or both (``planner.disagg_plan.plan_with_pools``), planned and
  chosen by its simulator check at 1.1x the highest load the best aggregated shape or the best pool sustains
  (the load to plan for), with the best aggregated shape among its candidates (as ``oserve simulate --policy
  static,oserve-static`` seeds it), then measured like the others.

Where ``aiconfigurator`` is installed, its ``cli_default`` (vLLM backend, SILICON database, the same ISL/OSL means,
TTFT at the mean ISL and TPOT) is run offline and its agg-vs-disagg choice printed beside ours.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np

from oserve.planner import Slo
from oserve.planner.baselines import homogeneous_candidates
from oserve.planner.capacity import CapacityModel
from oserve.planner.disagg import pool_candidates, pool_deployment
from oserve.planner.disagg_plan import POOL_ROUTER, plan_with_pools
from oserve.planner.dynamo import DYNAMO_ROUTER, dynamo_deployment
from oserve.planner.validate import _poisson_trace
from oserve.sim import simulate
from oserve.spec import get_model, parse_cluster
from oserve.trace import load_trace

SETUPS = (
    ("llama-3.1-8b", "1x8xH100", "meta-llama/Meta-Llama-3.1-8B"),
    ("llama-3.1-70b", "2x8xH100", "meta-llama/Meta-Llama-3.1-70B"),
)
# TTFT base + per prompt token (about 3x the idle prefill rate of the smallest fitting shape); TPOT loose / tight
SLAS = {
    "llama-3.1-8b": {"loose": Slo(1.0, 0.100, None, 1e-4), "tight": Slo(1.0, 0.015, None, 1e-4)},
    "llama-3.1-70b": {"loose": Slo(1.0, 0.100, None, 3e-4), "tight": Slo(1.0, 0.030, None, 3e-4)},
}
TRACES = {
    "azure_code": "azure_code_2023.csv",
    "azure_conv": "azure_conv_2023.csv",
    "mooncake": "mooncake_synthetic.jsonl",
}
AGG_ROUTER = "least-tokens"
DESIGN_OVER = 1.1  # OServe plans for 10% more than the best aggregated shape or pool sustains


def _probe_size(rate: float, args: argparse.Namespace) -> int:
    """Requests in a probe at ``rate``: at least ``--seconds`` of arrivals, so queues reach steady state."""
    return max(args.requests, math.ceil(rate * args.seconds))


def max_rate(model, dep, cluster, prompts, outputs, slo, router, guess, args) -> float:
    """The highest Poisson rate keeping 90% within the SLO (as ``simulated_rate``: grow, then bisect), each probe
    ``_probe_size`` requests long."""

    def ok(rate: float) -> bool:
        trace = _poisson_trace(prompts, outputs, rate, _probe_size(rate, args), 0)
        res = simulate(trace, dep, model, cluster, router=router, slo=slo.to_dict())
        return res.summary["slo_attainment"] >= 0.9

    lo, hi = 0.0, max(guess, 0.05)
    while ok(hi):
        lo, hi = hi, hi * 2
    if lo == 0.0:
        lo = hi / 2
        while lo > 1e-3 and not ok(lo):
            hi, lo = lo, lo / 2
        if lo <= 1e-3:
            return 0.0
    for _ in range(args.iterations):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def lengths(traces: Path, n: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for name, file in TRACES.items():
        t = load_trace(traces / file)
        k = min(len(t), 3 * n)
        out[name] = (t.prompt_tokens[:k].astype(np.int64), t.output_tokens[:k].astype(np.int64))
    return out


def aiconfigurator_choice(model_path: str, gpus: int, isl: float, osl: float, slo: Slo) -> dict:
    """aiconfigurator's agg-vs-disagg pick for the same inputs (vLLM backend), or why it could not run."""
    try:
        from aiconfigurator.cli.api import cli_default
    except ImportError as exc:
        return {"error": f"aiconfigurator not importable: {exc}"}
    ttft_ms = 1000 * float(slo.ttft_target(isl))
    try:
        logging.disable(logging.WARNING)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            r = cli_default(
                model_path,
                gpus,
                "h100_sxm",
                backend="vllm",
                isl=round(isl),
                osl=max(2, round(osl)),
                ttft=ttft_ms,
                tpot=1000 * slo.tpot_s,
                top_n=1,
            )
    except Exception as exc:  # a third-party failure is reported, not raised
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}
    finally:
        logging.disable(logging.NOTSET)
    return {
        "choice": r.chosen_exp,
        "tokens_per_s_per_gpu": {k: float(v) for k, v in r.best_throughputs.items()},
        "ttft_ms": ttft_ms,
    }


def _cached_aiconfigurator(cache: Path, model_path: str, gpus: int, isl: float, osl: float, slo: Slo) -> dict:
    key = f"{model_path}|{gpus}|{isl:.0f}|{osl:.0f}|{slo.to_dict()}"
    known = json.loads(cache.read_text()) if cache.is_file() else {}
    if key not in known or "error" in known[key]:
        known[key] = aiconfigurator_choice(model_path, gpus, isl, osl, slo)
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(known, indent=2))
    return known[key]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--traces", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/traces")
    p.add_argument("--requests", type=int, default=600, help="requests per simulated probe")
    p.add_argument("--iterations", type=int, default=4, help="bisection steps per measured rate")
    p.add_argument("--seconds", type=float, default=20.0, help="arrivals per probe at least this long")
    p.add_argument("--setups", default="all", help="comma-separated model names, or all")
    p.add_argument("--mixes", default="all", help="comma-separated of azure_code,azure_conv,mooncake, or all")
    p.add_argument("--no-aiconfigurator", action="store_true")
    p.add_argument(
        "--aiconfigurator-cache",
        type=Path,
        default=Path(__file__).resolve().parent / "results/disagg_aiconfigurator.json",
        help="its answers by input (each call takes about a minute); delete the file to re-run it",
    )
    p.add_argument("--json", type=Path, default=Path(__file__).resolve().parent / "results/disagg.json")
    args = p.parse_args(argv)
    if not args.traces.is_dir():
        print(f"no traces at {args.traces}", file=sys.stderr)
        return 1
    mixes = lengths(args.traces, args.requests)
    if args.mixes != "all":
        mixes = {k: v for k, v in mixes.items() if k in args.mixes.split(",")}
    rows = []
    start = time.perf_counter()
    for model_name, cluster_name, hf_path in SETUPS:
        if args.setups != "all" and model_name not in args.setups.split(","):
            continue
        model, cluster = get_model(model_name), parse_cluster(cluster_name)
        gpus = cluster.num_gpus
        aggs = [c.deployment for c in homogeneous_candidates(model, cluster, pps=(1,)) if c.config.pp == 1]
        for mix, (prompts, outputs) in mixes.items():
            for sla_name, slo in SLAS[model_name].items():
                t0 = time.perf_counter()

                def measure(
                    dep, router, guess, model=model, cluster=cluster, pr=prompts, out=outputs, slo=slo
                ):
                    return max_rate(model, dep, cluster, pr, out, slo, router, guess, args)

                capm = CapacityModel(model, slo)
                agg = []
                for dep in aggs:
                    config = dep.replicas[0].config
                    mu = capm.capacity(config, prompts, outputs).rate_rps * len(dep.replicas)
                    agg.append((measure(dep, AGG_ROUTER, mu), dep.describe(), dep))
                best_agg = max(agg, key=lambda a: a[0])
                shapes = pool_candidates(model, cluster, prompts, outputs, capm)[:3]
                dyn_dep, sizing = dynamo_deployment(model, cluster, prompts, outputs, slo)
                dyn = measure(dyn_dep, DYNAMO_ROUTER, best_agg[0] or 1.0)
                pd = [(dyn, dyn_dep.describe(), dyn_dep)]
                modelled = {}  # the pool capacity model's rate per GPU, beside the measured one
                for s in shapes:
                    dep = pool_deployment(model, cluster, s.layout)
                    if dep.describe() != dyn_dep.describe():
                        pd.append((measure(dep, POOL_ROUTER, s.rate_rps), dep.describe(), dep))
                        modelled[dep.describe()] = s.rate_rps / gpus
                best_pd = max(pd, key=lambda a: a[0])
                design = max(best_agg[0], best_pd[0]) or 1.0
                design *= DESIGN_OVER
                design_trace = _poisson_trace(prompts, outputs, design, _probe_size(design, args), 7)
                # as `oserve simulate --policy static,oserve-static`: the best homogeneous shape is a candidate
                base = simulate(
                    design_trace, best_agg[2], model, cluster, router=AGG_ROUTER, slo=slo.to_dict()
                )
                verified = plan_with_pools(
                    design_trace,
                    model,
                    cluster,
                    slo,
                    quantiles=(0.9,),
                    headrooms=(None,),
                    top=2,
                    seeds=[("best homogeneous", best_agg[2], AGG_ROUTER, base)],
                )
                measured = {d.describe(): r for r, _, d in agg + pd}
                shape = verified.deployment.describe()
                ours = measured.get(shape)
                if ours is None or verified.deployment.weights:
                    ours = measure(verified.deployment, verified.router, design)
                aic = (
                    _cached_aiconfigurator(
                        args.aiconfigurator_cache,
                        hf_path,
                        gpus,
                        float(prompts.mean()),
                        float(max(outputs.mean(), 2)),
                        slo,
                    )
                    if not args.no_aiconfigurator
                    else {"skipped": "--no-aiconfigurator"}
                )
                row = {
                    "model": model_name,
                    "cluster": cluster_name,
                    "mix": mix,
                    "isl_mean": float(prompts.mean()),
                    "osl_mean": float(outputs.mean()),
                    "sla": sla_name,
                    "slo": slo.to_dict(),
                    "agg": {"shape": best_agg[1], "rps_per_gpu": best_agg[0] / gpus},
                    "agg_all": {label: r / gpus for r, label, _ in agg},
                    "pd": {"shape": best_pd[1], "rps_per_gpu": best_pd[0] / gpus},
                    "pd_all": {label: r / gpus for r, label, _ in pd},
                    "pd_modelled": modelled,
                    "dynamo": {
                        "shape": dyn_dep.describe(),
                        "rps_per_gpu": dyn / gpus,
                        "sizing": sizing.to_dict(),
                    },
                    "oserve": {
                        "shape": shape,
                        "label": verified.label,
                        "router": verified.router,
                        "rps_per_gpu": ours / gpus,
                        "kind": "pd" if verified.deployment.disaggregated else "agg",
                    },
                    "ours_choice": "disagg" if best_pd[0] > best_agg[0] else "agg",
                    "aiconfigurator": aic,
                    "seconds": time.perf_counter() - t0,
                }
                rows.append(row)
                _print_row(row)
                _write(args, rows)
    _write(args, rows)
    print(f"wrote {args.json} in {time.perf_counter() - start:.0f} s")
    return 0


def _write(args: argparse.Namespace, rows: list[dict]) -> None:
    """The rows so far (written after each, so a long run keeps what it measured)."""
    args.json.parent.mkdir(parents=True, exist_ok=True)
    data = {"requests": args.requests, "seconds": args.seconds, "iterations": args.iterations, "rows": rows}
    args.json.write_text(json.dumps(data, indent=2, default=float))


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b > 0 and math.isfinite(a / b) else "-"


def _print_row(r: dict) -> None:
    a, d, y, o = r["agg"]["rps_per_gpu"], r["pd"]["rps_per_gpu"], r["dynamo"]["rps_per_gpu"], r["oserve"]
    aic = r["aiconfigurator"]
    aic_text = aic.get("choice") or ("skipped" if "skipped" in aic else "error")
    print(
        f"{r['model']:14s} {r['mix']:10s} {r['sla']:5s} | agg {a:7.3f} ({r['agg']['shape']}) | "
        f"pd {d:7.3f} ({r['pd']['shape']}) | dynamo {y:7.3f} | oserve {o['rps_per_gpu']:7.3f} ({o['shape']}) | "
        f"pd/agg {_ratio(d, a)} oserve/agg {_ratio(o['rps_per_gpu'], a)} oserve/dynamo "
        f"{_ratio(o['rps_per_gpu'], y)} | ours {r['ours_choice']} aiconfigurator {aic_text} | {r['seconds']:.0f} s",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())

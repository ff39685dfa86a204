"""How close the planner's capacity mu is to what the simulator sustains, per request type and replica config.

    python benchmarks/capacity_accuracy.py [--traces ../shared/data/traces] [--requests 1500]
                                           [--trace code|conv|long] [--model llama-2-70b|llama-3-8b|...]
                                           [--minutes 20]
                                           [--json benchmarks/results/capacity_accuracy.json]
    python benchmarks/capacity_accuracy.py --mix [--trace code|conv|blend] [--model ...]

For each real trace (Azure 2023 code and conversation hours), its 6 quantile types, and replica configs of
Llama-2-70B on H100 (TP4, TP8, TP2PP2) and Llama-3-8B on H100 (TP1, TP2), and for the long blend (the headline's
``long`` mix: the conversation hour with the Mooncake synthetic trace, its first ``--minutes``) Llama-3.1-70B (TP4,
TP8) and Llama-3.1-8B (TP1, TP2, TP4): mu from ``CapacityModel`` on the type's
length sample (16 requests), and the simulated capacity — the highest Poisson rate at which one simulated replica, fed requests
resampled from that type's real lengths, keeps 90% of them within the SLO (``planner.validate``). SLO: the model's
default on 1x8xH100. As ``plan`` prices a type, requests longer than every config's ``max_model_len`` (vLLM rejects
them anywhere: Llama-2-70B's 4,096-token context on the conversation hour) are left out of both sides. Prints the relative error (model / simulated - 1) per row, the mean absolute error per
(trace, model) and overall. ``--trace`` / ``--model`` run a subset (the whole table takes a few minutes).

``--mix`` checks whole deployments on whole mixes instead: for the scenarios of ``planner_quality.py`` (code,
conversation, 50/50 blend; Llama-3-8B on 1x8xH100, Llama-2-70B on 2x8xH100 and 4x8xA100-80GB), the planned and the
best homogeneous deployment for the trace's mean mix, the rate the planner predicts (alpha x total demand) against
the highest Poisson rate of requests resampled from the trace at which the simulated deployment keeps 90% within
the SLO (weighted routing by the plan's shares). No burstiness: this isolates the capacity model from the trace's
arrival pattern. JSON: ``results/capacity_accuracy_mix.json`` unless ``--json`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from oserve.planner import CapacityModel, default_slo, demands_from_trace, plan
from oserve.planner.capacity import max_model_len
from oserve.planner.validate import simulated_capacity, simulated_rate
from oserve.spec import ReplicaConfig, get_gpu, get_model, parse_cluster
from oserve.trace import blend, load_trace, window

SETUPS = {"llama-2-70b": ((4, 1), (8, 1), (2, 2)), "llama-3-8b": ((1, 1), (2, 1))}
#: the long blend needs 128k-context models
LONG_SETUPS = {"llama-3.1-70b": ((4, 1), (8, 1)), "llama-3.1-8b": ((1, 1), (2, 1), (4, 1))}
TRACE_FILES = ("azure_code_2023.csv", "azure_conv_2023.csv", "mooncake_synthetic.jsonl")
MIX_SETUPS = (("llama-3-8b", "1x8xH100"), ("llama-2-70b", "2x8xH100"), ("llama-2-70b", "4x8xA100-80GB"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--traces", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/traces")
    p.add_argument("--requests", type=int, default=1500, help="requests per simulated probe")
    p.add_argument("--json", type=Path, help="default: results/capacity_accuracy.json (--mix: ..._mix.json)")
    p.add_argument("--trace", choices=("code", "conv", "long", "blend"), help="only this trace")
    p.add_argument("--model", choices=(*SETUPS, *LONG_SETUPS), help="only this model")
    p.add_argument("--minutes", type=float, default=20.0, help="minutes of the long blend (default 20)")
    p.add_argument("--mix", action="store_true", help="whole deployments on whole mixes (see the module doc)")
    args = p.parse_args(argv)
    results = Path(__file__).resolve().parent / "results"
    if args.mix:
        args.json = args.json or results / "capacity_accuracy_mix.json"
        return mix_check(args)
    args.json = args.json or results / "capacity_accuracy.json"
    rows = []
    h100 = get_gpu("h100")
    print(
        f"{'trace':<10} {'model':<14} {'config':<8} {'type':<20} {'mu model':>9} {'simulated':>9} {'error':>7} {'limit':<9}"
    )
    if args.trace == "blend":
        print("--trace blend is for --mix", file=sys.stderr)
        return 2
    missing = [f for f in TRACE_FILES if not (args.traces / f).is_file()]
    if missing:
        print(f"trace not found: {args.traces / missing[0]}", file=sys.stderr)
        return 1
    for name, trace, setups in _traces(args):
        demands, grid = demands_from_trace(trace)
        types = grid.classify(trace)
        for model_name, shapes in setups.items():
            if args.model not in (None, model_name):
                continue
            model = get_model(model_name)
            slo = default_slo(model, parse_cluster("1x8xH100"))
            capm = CapacityModel(model, slo)
            configs = [ReplicaConfig(h100, tp=tp, pp=pp) for tp, pp in shapes]
            # as ``plan`` prices a type: on the requests some config holds (vLLM rejects the rest anywhere)
            longest = max(max_model_len(model, c) for c in configs)
            held = trace.prompt_tokens + trace.output_tokens <= longest
            for config in configs:
                for k, d in enumerate(demands):
                    mask = (types == k) & held
                    prompts, outputs = d.lengths
                    keep = prompts + outputs <= longest
                    if not mask.any() or not keep.any():
                        continue
                    cap = capm.capacity(config, prompts[keep], outputs[keep])
                    start = time.perf_counter()
                    measured = simulated_capacity(
                        model,
                        config,
                        trace.prompt_tokens[mask],
                        trace.output_tokens[mask],
                        slo,
                        guess_rps=max(cap.rate_rps, 0.05),
                        num_requests=args.requests,
                        iterations=6,
                    )
                    error = cap.rate_rps / measured - 1 if measured > 0 else float("nan")
                    rows.append(
                        {
                            "trace": name,
                            "model": model_name,
                            "config": config.label,
                            "type": d.name,
                            "mu_model_rps": cap.rate_rps,
                            "mu_simulated_rps": measured,
                            "relative_error": error,
                            "limit": cap.limit,
                            "dropped_over_context": int(np.count_nonzero((types == k) & ~held)),
                            "probe_wall_s": time.perf_counter() - start,
                        }
                    )
                    print(
                        f"{name[:10]:<10} {model_name:<14} {f'TP{config.tp}PP{config.pp}':<8} {d.name:<20} "
                        f"{cap.rate_rps:>9.3f} {measured:>9.3f} {error:>+7.1%} {cap.limit:<9}",
                        flush=True,
                    )
    errors = np.array([r["relative_error"] for r in rows if np.isfinite(r["relative_error"])])
    groups = {}
    for r in rows:
        if np.isfinite(r["relative_error"]):
            groups.setdefault(f"{r['trace']} {r['model']}", []).append(abs(r["relative_error"]))
    print()
    for key, values in groups.items():
        print(f"{key:<28} mean |error| {np.mean(values):.1%}, max {np.max(values):.1%}")
    print(
        f"{len(rows)} (type, config) pairs: mean |error| {np.mean(np.abs(errors)):.1%}, "
        f"median {np.median(np.abs(errors)):.1%}, within 15%: {np.mean(np.abs(errors) <= 0.15):.0%}"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "rows": rows,
                "mean_abs_error": float(np.mean(np.abs(errors))),
                "mean_abs_error_by_trace_model": {k: float(np.mean(v)) for k, v in groups.items()},
            },
            indent=2,
        )
    )
    print(f"wrote {args.json}")
    return 0


def _traces(args: argparse.Namespace):
    """(name, trace, setups) for each trace the run covers: the Azure code and conversation hours on the
    Llama-2 / Llama-3 setups, and the long blend (the conversation hour with the Mooncake synthetic trace at their
    own rates, the headline's ``long`` mix; its first ``--minutes``) on the 128k-context Llama-3.1 ones."""
    for name in ("azure_code_2023", "azure_conv_2023"):
        if args.trace in (None, name[6:10]):
            yield name, load_trace(args.traces / f"{name}.csv"), SETUPS
    if args.trace in (None, "long"):
        mooncake = load_trace(args.traces / "mooncake_synthetic.jsonl")
        conv = load_trace(args.traces / "azure_conv_2023.csv")
        both = blend([conv, mooncake], name="mooncake|azure-conv")
        yield "long_blend", window(both, 0.0, args.minutes * 60), LONG_SETUPS


def mix_check(args: argparse.Namespace) -> int:
    code, conv = args.traces / "azure_code_2023.csv", args.traces / "azure_conv_2023.csv"
    if not (code.is_file() and conv.is_file()):
        print(f"traces not found in {args.traces}", file=sys.stderr)
        return 1
    traces = {"code": load_trace(code), "conv": load_trace(conv)}
    traces["blend"] = blend([traces["code"], traces["conv"]], weights=[0.5, 0.5], seed=0)
    rows = []
    print(
        f"{'trace':<6} {'model':<12} {'cluster':<14} {'deployment':<44} {'predicted':>9} {'simulated':>9} {'error':>7}"
    )
    for name, trace in traces.items():
        if args.trace not in (None, name):
            continue
        for model_name, spelling in MIX_SETUPS:
            if args.model not in (None, model_name):
                continue
            model, cluster = get_model(model_name), parse_cluster(spelling)
            slo = default_slo(model, cluster)
            demands, grid = demands_from_trace(trace)
            total = sum(d.rate_rps for d in demands)
            planned = plan(model, cluster, demands, slo, grid=grid)
            for deployment, alpha in (
                (planned.baseline, planned.baseline_alpha),
                (planned.deployment, planned.alpha),
            ):
                predicted = alpha * total
                measured = simulated_rate(
                    model,
                    deployment,
                    cluster,
                    trace.prompt_tokens,
                    trace.output_tokens,
                    slo,
                    guess_rps=predicted,
                    num_requests=max(args.requests, 3000),
                    iterations=5,
                )
                error = predicted / measured - 1 if measured > 0 else float("nan")
                rows.append(
                    {
                        "trace": name,
                        "model": model_name,
                        "cluster": spelling,
                        "deployment": deployment.note,
                        "predicted_rps": predicted,
                        "simulated_rps": measured,
                        "relative_error": error,
                    }
                )
                print(
                    f"{name:<6} {model_name:<12} {spelling:<14} {deployment.note[:44]:<44} {predicted:>9.2f} "
                    f"{measured:>9.2f} {error:>+7.1%}",
                    flush=True,
                )
    errors = np.abs([r["relative_error"] for r in rows if np.isfinite(r["relative_error"])])
    print(f"\n{len(rows)} deployments: mean |error| {errors.mean():.1%}, max {errors.max():.1%}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"rows": rows, "mean_abs_error": float(errors.mean())}, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

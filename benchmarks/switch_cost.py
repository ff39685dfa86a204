"""What a deployment switch costs: the switch planner's transfer plan against reloading every changed replica.

    python benchmarks/switch_cost.py [--json benchmarks/results/switch_cost.json]

Llama-2-70B (bf16, 138 GB). For each switch, the planner's plan (``plan_switch``: reuse resident bytes, copy the
rest over NVLink / the network / host memory, links never oversubscribed) and the baselines where every started
replica loads its whole shards, from the node's disk (``naive_reload_plan``, 2 GB/s per node, the cluster default)
or from host memory (``source="host"``: the page cache, PCIe per GPU). Reported: bytes moved and over which links,
when the weights are in place, when the last replica serves with a cold engine start (``COLD_RESTART_S``) and with
a sleeping engine woken (``WAKE_RESTART_S``), GPU-seconds out of service, and the planner's own wall time.
Drain 0 s (running requests re-routed at once). Figures are the model's, from datasheet bandwidths.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from oserve.adapt import COLD_RESTART_S, WAKE_RESTART_S, SwitchPlan, naive_reload_plan, plan_switch
from oserve.planner import place
from oserve.spec import Deployment, ReplicaConfig, get_gpu, get_model, parse_cluster

MODEL = "llama-2-70b"
# (label, cluster, current shapes, target shapes); shapes are (tp, count), placed as the planner places them
CASES = [
    ("TP8 -> 2xTP4", "1x8xH100", [(8, 1)], [(4, 2)]),
    ("4xTP2 -> TP8", "1x8xH100", [(2, 4)], [(8, 1)]),
    ("2xTP4 -> TP4+2xTP2", "1x8xH100", [(4, 2)], [(4, 1), (2, 2)]),
    ("4xTP4 -> 2xTP8", "2x8xH100", [(4, 4)], [(8, 2)]),
    ("TP8 -> 2xTP8 (node 1 joins)", "2x8xH100", [(8, 1)], [(8, 2)]),
]


def deployment(model: str, cluster, shapes: list[tuple[int, int]]) -> Deployment:
    h100 = get_gpu("h100")
    return Deployment(model, place(cluster, [(ReplicaConfig(h100, tp=tp), n) for tp, n in shapes]))


def summary(plan: SwitchPlan) -> dict:
    return {
        "method": plan.method,
        "transfer_s": plan.transfer_s,
        "duration_s": plan.duration_s,
        "capacity_lost_gpu_s": plan.capacity_lost_gpu_s,
        "moved_bytes": plan.moved_bytes,
        "bytes_by_link": plan.bytes_by_link(),
        "restarts": plan.restarts,
        "kept": list(plan.kept),
        "transfers": sum(t.link != "local" for t in plan.transfers),
        "ready_s": {s.name: s.ready_s for s in plan.started},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", type=Path, default=Path(__file__).resolve().parent / "results/switch_cost.json")
    args = p.parse_args(argv)
    model = get_model(MODEL)
    rows = []
    print(
        f"{MODEL} ({model.weight_bytes / 1e9:.0f} GB), drain 0 s; cold start {COLD_RESTART_S:g} s, wake {WAKE_RESTART_S:g} s"
    )
    print(
        f"{'switch':<28} {'moved GB (links)':<30} {'weights in place s':>24} {'serving, cold start s':>26} "
        f"{'serving, wake s':>22} {'GPU-s lost':>14} {'plan ms':>8}"
    )
    print(
        f"{'':<28} {'':<30} {'plan / disk / host':>24} {'plan / disk (x)':>26} {'plan / host (x)':>22} {'plan / disk':>14}"
    )
    for label, spelling, cur_shapes, tgt_shapes in CASES:
        cluster = parse_cluster(spelling)
        cur, tgt = deployment(model.name, cluster, cur_shapes), deployment(model.name, cluster, tgt_shapes)
        start = time.perf_counter()
        plan = plan_switch(cur, tgt, model, cluster)
        wall_ms = (time.perf_counter() - start) * 1e3
        wake = plan_switch(cur, tgt, model, cluster, restart_s=WAKE_RESTART_S)
        disk = naive_reload_plan(cur, tgt, model, cluster)
        host = naive_reload_plan(cur, tgt, model, cluster, source="host", restart_s=WAKE_RESTART_S)
        links = plan.bytes_by_link()
        moved = ", ".join(f"{k} {v / 1e9:.0f}" for k, v in sorted(links.items()) if k != "local" and v >= 1e8)
        row = {
            "switch": label,
            "cluster": spelling,
            "current": cur.describe(),
            "target": tgt.describe(),
            "plan": summary(plan),
            "plan_wake": summary(wake),
            "reload_disk": summary(disk),
            "reload_host_wake": summary(host),
            "plan_wall_ms": wall_ms,
            "speedup_cold": disk.duration_s / plan.duration_s if plan.duration_s else None,
            "speedup_wake": host.duration_s / wake.duration_s if wake.duration_s else None,
            "speedup_weights": disk.transfer_s / plan.transfer_s if plan.transfer_s else None,
        }
        rows.append(row)
        cells = (
            f"{plan.moved_bytes / 1e9:.0f} ({moved or '-'})",
            f"{plan.transfer_s:.3f} / {disk.transfer_s:.1f} / {host.transfer_s:.2f}",
            f"{plan.duration_s:.1f} / {disk.duration_s:.1f} ({row['speedup_cold']:.1f}x)",
            f"{wake.duration_s:.2f} / {host.duration_s:.2f} ({row['speedup_wake']:.1f}x)",
            f"{plan.capacity_lost_gpu_s:.0f} / {disk.capacity_lost_gpu_s:.0f}",
        )
        print(
            f"{label:<28} {cells[0]:<30} {cells[1]:>24} {cells[2]:>26} {cells[3]:>22} {cells[4]:>14} {wall_ms:>8.0f}"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "model": MODEL,
                "weight_bytes": model.weight_bytes,
                "cold_restart_s": COLD_RESTART_S,
                "wake_restart_s": WAKE_RESTART_S,
                "drain_s": 0.0,
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

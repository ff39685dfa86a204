"""Live switches under load: time to converge and requests lost, through the real runtime.

    python benchmarks/runtime_switch.py [--orchestrator local|ray] [--speed 20] [--json benchmarks/results/runtime_switch.json]

``oserve serve``'s ``Server`` in-process on loopback: llama-3-8b on 1x4xH100 with emulated engines (``--speed``
times real time), the local (or Ray) orchestrator, the gateway in front. For each switch in a chain (4 x TP1 ->
TP2 + 2 x TP1 -> 2 x TP2 -> 4 x TP1 -> TP4), a slice of the Azure conversation trace (4x its pace, every other
request streamed) is replayed open-loop and the new deployment is applied over the admin API one second in.
Reported per switch: time to converge (first byte of the apply to the target routed and the old replicas
stopped), its parts (drain + stop, engine start to healthy), time with nothing routed, requests sent / ok /
failed during the run, and p50 / p99 request latency. The engine start dominates: an emulated engine is a Python
process (~3-6 s to import and bind on a busy 2-core box); a real vLLM start is 30-100+ s (docs/switch.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from oserve.files import shared_data_dir
from oserve.runtime.config import ServeConfig
from oserve.runtime.loadgen import LoadRequest, requests_from_trace, run_load, summarise
from oserve.runtime.serve import Server
from oserve.spec import Deployment, Replica, ReplicaConfig, get_gpu
from oserve.trace import load_trace

H100 = get_gpu("H100")
CHAIN = [
    ("4 x TP1", [("r0", 1, (0,)), ("r1", 1, (1,)), ("r2", 1, (2,)), ("r3", 1, (3,))]),
    ("TP2 + 2 x TP1", [("r0", 1, (0,)), ("r1", 1, (1,)), ("w0", 2, (2, 3))]),
    ("2 x TP2", [("w1", 2, (0, 1)), ("w0", 2, (2, 3))]),
    ("4 x TP1", [("r0", 1, (0,)), ("r1", 1, (1,)), ("r2", 1, (2,)), ("r3", 1, (3,))]),
    ("TP4", [("big", 4, (0, 1, 2, 3))]),
]


def deployment(shapes) -> Deployment:
    return Deployment("llama-3-8b", tuple(Replica(ReplicaConfig(H100, tp=tp), g, n) for n, tp, g in shapes))


def load_slices(count: int, per_switch: int) -> list[list[LoadRequest]]:
    data = shared_data_dir()
    if data is None or not (data / "traces" / "azure_conv_2023.csv").is_file():
        sys.exit("needs ../shared/data/traces/azure_conv_2023.csv (or $OSERVE_DATA)")
    trace = load_trace(data / "traces" / "azure_conv_2023.csv")
    return [
        requests_from_trace(trace.take(np.arange(i * per_switch, (i + 1) * per_switch)), time_scale=4.0)
        for i in range(count)
    ]


def run(orchestrator: str, speed: float, per_switch: int) -> dict:
    logs = tempfile.mkdtemp(prefix="oserve-bench-")
    first = Path(logs) / "first.yaml"
    deployment(CHAIN[0][1]).save(first)
    config = ServeConfig().merged(
        {
            "deployment": str(first),
            "gateway.port": 0,
            "backend.speed": speed,
            "orchestrator.name": orchestrator,
            "orchestrator.log_dir": logs,
            "controller.enabled": False,
        }
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def call(coro, timeout_s: float = 600):
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout_s)

    server = Server(config)
    t = time.monotonic()
    call(server.start())
    start_s = time.monotonic() - t
    rows = []
    try:
        for (src, _), (dst, shapes), requests in zip(
            CHAIN[:-1], CHAIN[1:], load_slices(len(CHAIN) - 1, per_switch), strict=True
        ):

            async def one(requests=requests, shapes=shapes):
                load = asyncio.create_task(run_load(server.url, "llama-3-8b", requests))
                await asyncio.sleep(1.0)
                report = await asyncio.wrap_future(
                    asyncio.run_coroutine_threadsafe(server.apply(deployment(shapes)), loop)
                )
                return report, await load

            report, outcomes = asyncio.run(one())
            summary = summarise(outcomes)
            stop_s = sum(s.end_s - s.start_s for s in report.steps if s.action == "stop")
            boot_s = sum(s.end_s - s.start_s for s in report.steps if s.action == "start")
            rows.append(
                {
                    "switch": f"{src} -> {dst}",
                    "converge_s": report.converge_s,
                    "drain_stop_s": stop_s,
                    "start_s": boot_s,
                    "gap_s": report.gap_s,
                    "kept": list(report.kept),
                    "started": list(report.started),
                    "stopped": list(report.stopped),
                    **{k: summary[k] for k in ("requests", "ok", "failed", "latency_p50_s", "latency_p99_s")},
                    "errors": summary["errors"][:5],
                }
            )
    finally:
        call(server.stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
    return {"orchestrator": orchestrator, "speed": speed, "first_start_s": start_s, "switches": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orchestrator", default="local", choices=["local", "ray"])
    parser.add_argument("--speed", type=float, default=20.0, help="emulated engines' clock vs real time")
    parser.add_argument("--requests", type=int, default=160, help="trace requests per switch (~7 s at 4x)")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/runtime_switch.json"))
    args = parser.parse_args()
    if args.orchestrator == "ray":
        import ray

        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(num_cpus=2, num_gpus=4, include_dashboard=False, log_to_driver=False)
    result = run(args.orchestrator, args.speed, args.requests)
    print(
        f"llama-3-8b on 1x4xH100, emulated engines at {args.speed:g}x, {args.orchestrator} orchestrator; "
        f"first start {result['first_start_s']:.2f} s"
    )
    head = f"{'switch':<28} {'converge s':>10} {'drain+stop':>10} {'start':>7} {'gap s':>6} {'sent':>5} {'ok':>5} {'failed':>6} {'p50 s':>6} {'p99 s':>6}"
    print(head)
    for r in result["switches"]:
        print(
            f"{r['switch']:<28} {r['converge_s']:>10.2f} {r['drain_stop_s']:>10.2f} {r['start_s']:>7.2f} "
            f"{r['gap_s']:>6.2f} {r['requests']:>5} {r['ok']:>5} {r['failed']:>6} "
            f"{r['latency_p50_s'] or 0:>6.2f} {r['latency_p99_s'] or 0:>6.2f}"
        )
        for status, error in r["errors"]:
            print(f"    failed: HTTP {status}: {error}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

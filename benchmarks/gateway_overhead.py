"""What the gateway costs: requests/s and added latency of the gateway against calling an emulated replica
directly, non-streaming and streaming, in one run.

    python benchmarks/gateway_overhead.py [--requests 4000] [--json benchmarks/results/gateway_overhead.json]

Processes: one emulated replica (``oserve engine``, Llama-2-7B on one H100 at ``--speed 1e6``, so its steps take
no wall time and only its Python work remains), the gateway in front of it, and the load generator (an aiohttp
client). Pinning (``os.sched_setaffinity``): the gateway gets a core of its own; on a 2-core machine the
replica and the load generator share the other, with 4 or more cores each gets its own. Each request asks for
``--max-tokens`` tokens (16) with a 40-character prompt; the replica runs with ``--tick-ms 0``, so a stream is
16 separate SSE writes, one per engine step. The gateway's CPU time per request (from /proc, during the
concurrency-32 run) gives the requests per second one gateway core sustains, whatever the machine's layout. Latency: concurrency 1, ``--requests`` requests after a warm-up, p50 / p99 of the client-side time to the
last byte; the gateway's added latency is its percentile minus the direct one. Throughput: concurrency 32, the
same count, requests per second. The gateway runs on uvloop when installed (``oserve.runtime.run_async``); add
``--also-asyncio`` to measure it on asyncio's default loop as well.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import numpy as np

from oserve.runtime import run_async
from oserve.runtime.gateway import Gateway, make_gateway_app, serve_gateway
from oserve.spec import Deployment, Replica, ReplicaConfig, get_gpu

MODEL = "llama-2-7b"
ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cores() -> dict[str, set[int]]:
    """The gateway gets a core of its own; the replica and the load generator share another when only two."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cores) >= 4:
        return {"gateway": {cores[1]}, "replica": {cores[2]}, "client": {cores[3]}}
    if len(cores) >= 2:
        return {"gateway": {cores[0]}, "replica": {cores[1]}, "client": {cores[1]}}
    return {}


def _cpu_s(pid: int) -> np.ndarray:
    """(user, system) CPU seconds of a process so far (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return np.full(2, np.nan)
    return np.array([int(fields[11]), int(fields[12])]) / os.sysconf("SC_CLK_TCK")


def _pin(cores: set[int] | None, pid: int = 0) -> None:
    if cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(pid, cores)


def _gateway_main(replica_url: str, port: int, cores: set[int] | None, loop: str) -> None:
    _pin(cores)
    deployment = Deployment(MODEL, (Replica(ReplicaConfig(get_gpu("H100")), (0,), "r0"),))
    app = make_gateway_app(Gateway(deployment, {"r0": replica_url}))
    main = serve_gateway(app, "127.0.0.1", port)
    if loop == "asyncio":
        asyncio.run(main)
    else:
        run_async(main)


def _bare_proxy_main(replica_url: str, port: int, cores: set[int] | None, loop: str) -> None:
    """The floor: an aiohttp server forwarding the body with an aiohttp client and piping the answer back, with
    no validation, typing, routing, retries or metrics (what GATEWAY.md measured)."""
    _pin(cores)
    from aiohttp import web

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        async with request.app["http"].post(replica_url + request.path, data=body, headers=_JSON) as up:
            if "text/event-stream" not in up.headers.get("Content-Type", ""):
                return web.Response(body=await up.read(), status=up.status, content_type="application/json")
            down = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await down.prepare(request)
            while chunk := await up.content.readany():
                await down.write(chunk)
            await down.write_eof()
            return down

    async def health(request: web.Request) -> web.Response:
        return web.Response()

    async def session(app: web.Application):
        app["http"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        yield
        await app["http"].close()

    app = web.Application()
    app.router.add_post("/v1/completions", handle)
    app.router.add_get("/health", health)
    app.cleanup_ctx.append(session)

    async def main() -> None:  # until SIGTERM ends the process
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.Event().wait()

    asyncio.run(main()) if loop == "asyncio" else run_async(main())


_JSON = {"Content-Type": "application/json"}


async def _wait_ready(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(f"{url}/health") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


async def _load(
    url: str, *, stream: bool, concurrency: int, requests: int, warmup: int, max_tokens: int
) -> dict:
    """Send ``warmup`` then ``requests`` requests from ``concurrency`` workers; latency of each and the rate."""
    body = json.dumps(
        {"model": MODEL, "prompt": "x" * 40, "max_tokens": max_tokens, "stream": stream}
    ).encode()
    headers = {"Content-Type": "application/json"}
    target = f"{url}/v1/completions"
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def run(count: int) -> list[float]:
            todo = iter(range(count))
            latencies: list[float] = []

            async def worker() -> None:
                for _ in todo:
                    t = time.perf_counter()
                    async with http.post(target, data=body, headers=headers) as r:
                        await r.read()
                        if r.status != 200:
                            raise RuntimeError(f"HTTP {r.status} from {target}")
                    latencies.append(time.perf_counter() - t)

            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return latencies

        await run(warmup)
        start = time.perf_counter()
        latencies = await run(requests)
        wall_s = time.perf_counter() - start
    ms = np.array(latencies) * 1e3
    return {
        "requests": requests,
        "concurrency": concurrency,
        "req_per_s": requests / wall_s,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=4000, help="measured requests per configuration")
    p.add_argument("--warmup", type=int, default=400)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--throughput-concurrency", type=int, default=32)
    p.add_argument("--also-asyncio", action="store_true", help="measure the gateway on asyncio's loop too")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/gateway_overhead.json")
    args = p.parse_args(argv)

    cores = _cores()
    _pin(cores.get("client"))
    replica_port, env = _free_port(), {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    replica = subprocess.Popen(
        [sys.executable, "-m", "oserve.cli.main", "engine", "--model", MODEL, "--port", str(replica_port),
         "--speed", "1e6", "--tick-ms", "0"],
        env=env, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    _pin(cores.get("replica"), replica.pid)
    replica_url = f"http://127.0.0.1:{replica_port}"
    variants = [("gateway", _gateway_main, "uvloop"), ("bare aiohttp proxy", _bare_proxy_main, "uvloop")]
    if args.also_asyncio:
        variants.append(("gateway", _gateway_main, "asyncio"))
    gateways = {}
    ctx = mp.get_context("spawn")
    for name, target, loop in variants:
        port = _free_port()
        proc = ctx.Process(target=target, args=(replica_url, port, cores.get("gateway"), loop), daemon=True)
        proc.start()
        gateways[f"{name} ({loop})"] = (proc, f"http://127.0.0.1:{port}")
    rows = []
    try:
        asyncio.run(_wait_ready(replica_url))
        for _, url in gateways.values():
            asyncio.run(_wait_ready(url))
        targets = [("direct", replica_url)] + [(label, url) for label, (_, url) in gateways.items()]
        pids = {"direct": replica.pid} | {label: proc.pid for label, (proc, _) in gateways.items()}
        for stream in (False, True):
            for label, url in targets:
                row = {"path": label, "stream": stream}
                pid = pids[label]
                for key, conc in (("latency", 1), ("throughput", args.throughput_concurrency)):
                    cpu0 = _cpu_s(pid)
                    row[key] = asyncio.run(
                        _load(url, stream=stream, concurrency=conc, requests=args.requests, warmup=args.warmup,
                              max_tokens=args.max_tokens)
                    )  # fmt: skip
                    # CPU of the process serving this path, per request (warm-up included in the count)
                    user_ms, sys_ms = (_cpu_s(pid) - cpu0) * 1e3 / (args.requests + args.warmup)
                    row[key]["server_cpu_ms_per_request"] = user_ms + sys_ms
                    row[key]["server_user_ms_per_request"] = user_ms
                    row[key]["server_sys_ms_per_request"] = sys_ms
                rows.append(row)
                lat, thr = row["latency"], row["throughput"]
                print(
                    f"{label:<26} {'stream' if stream else 'plain ':<7} c=1 p50 {lat['p50_ms']:6.2f} ms "
                    f"p99 {lat['p99_ms']:6.2f} ms | c={thr['concurrency']} {thr['req_per_s']:7.0f} req/s "
                    f"p50 {thr['p50_ms']:6.2f} ms p99 {thr['p99_ms']:6.2f} ms | "
                    f"server CPU {thr['server_cpu_ms_per_request']:.3f} ms/req "
                    f"({thr['server_sys_ms_per_request']:.3f} in the kernel)",
                    flush=True,
                )
    finally:
        for proc, _ in gateways.values():
            if proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)
            proc.join(10)
        replica.send_signal(signal.SIGTERM)
        replica.wait(20)

    print("\nadded by the gateway (gateway - direct):")
    added = []
    for stream in (False, True):
        direct = next(r for r in rows if r["path"] == "direct" and r["stream"] == stream)
        for r in rows:
            if r["path"] == "direct" or r["stream"] != stream:
                continue
            a = {
                "path": r["path"],
                "stream": stream,
                "added_p50_ms": r["latency"]["p50_ms"] - direct["latency"]["p50_ms"],
                "added_p99_ms": r["latency"]["p99_ms"] - direct["latency"]["p99_ms"],
                "req_per_s": r["throughput"]["req_per_s"],
                "throughput_vs_direct": r["throughput"]["req_per_s"] / direct["throughput"]["req_per_s"],
                "gateway_cpu_ms_per_request": r["throughput"]["server_cpu_ms_per_request"],
                "req_per_s_per_gateway_core": 1e3 / r["throughput"]["server_cpu_ms_per_request"],
            }
            added.append(a)
            print(
                f"  {a['path']:<26} {'stream' if stream else 'plain ':<7} added p50 {a['added_p50_ms']:+.2f} ms "
                f"p99 {a['added_p99_ms']:+.2f} ms; {a['req_per_s']:.0f} req/s "
                f"({a['throughput_vs_direct']:.2f}x direct); gateway CPU {a['gateway_cpu_ms_per_request']:.3f} ms/req "
                f"= {a['req_per_s_per_gateway_core']:.0f} req/s per core"
            )
    result = {
        "benchmark": "gateway_overhead",
        "setup": {
            "model": MODEL,
            "replica_speed": 1e6,
            "replica_tick_ms": 0,
            "max_tokens": args.max_tokens,
            "requests": args.requests,
            "warmup": args.warmup,
            "cores": {k: sorted(v) for k, v in cores.items()},
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "aiohttp": aiohttp.__version__,
        },
        "rows": rows,
        "added": added,
        "targets": {"added_p50_ms_max": 2.0, "gateway_req_per_s_min": 1000},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

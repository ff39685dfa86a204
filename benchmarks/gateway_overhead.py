"""What the gateway costs: requests/s and added latency of the gateway against calling an emulated replica
directly, non-streaming and streaming, in one run.

    python benchmarks/gateway_overhead.py [--requests 2000] [--repeats 3] [--also-asyncio]
        [--json benchmarks/results/gateway_overhead.json]

Processes: one emulated replica (``oserve engine``, Llama-2-7B on one H100 at ``--speed 1e6``, so its steps take
no wall time and only its Python work remains), the gateway in front of it, a bare aiohttp proxy beside it (no
validation, typing, routing or metrics: the floor), and the load generator (an aiohttp client). Pinning
(``os.sched_setaffinity``): the proxies get a core of their own; on a 2-core machine the replica and the load
generator share the other; with 4 or more cores each gets its own. Each request asks for ``--max-tokens`` tokens
(16) with a 40-character prompt; the replica runs with ``--tick-ms 0``, so a stream is 16 separate SSE writes,
one per engine step.

Latency: concurrency 1, ``--requests`` requests after a warm-up, p50 / p99 of the client-side time to the last
byte, the paths taken in turn (one request each per round) so a noisy neighbour slows them alike; the added
latency is a path's percentile minus the direct one (and the median of the per-round differences). Throughput:
concurrency 32, requests per second, and the serving process's CPU time per request (from /proc), which gives
the requests per second one core sustains whatever else the machine runs. Each figure is the median of
``--repeats`` repeats. The gateway runs on uvloop when installed (``oserve.runtime.run_async``);
``--also-asyncio`` measures it on asyncio's default loop too.
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


async def _latency_interleaved(
    urls: dict[str, str], *, stream: bool, requests: int, warmup: int, max_tokens: int
) -> dict[str, dict]:
    """Concurrency 1, round-robin over the paths (one request to each in turn), so every path sees the same
    machine load: a noisy neighbour slows all of them alike. Per path p50 / p99, and the median of the paired
    differences against ``direct`` (the request to each path in the same round)."""
    body = json.dumps(
        {"model": MODEL, "prompt": "x" * 40, "max_tokens": max_tokens, "stream": stream}
    ).encode()
    headers = {"Content-Type": "application/json"}
    samples: dict[str, list[float]] = {label: [] for label in urls}
    async with aiohttp.ClientSession() as http:
        for i in range(warmup + requests):
            for label, url in urls.items():
                t = time.perf_counter()
                async with http.post(f"{url}/v1/completions", data=body, headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"HTTP {r.status} from {url}")
                if i >= warmup:
                    samples[label].append((time.perf_counter() - t) * 1e3)
    direct = np.array(samples["direct"])
    out = {}
    for label, values in samples.items():
        ms = np.array(values)
        out[label] = {
            "requests": requests,
            "concurrency": 1,
            "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)),
            "paired_added_p50_ms": float(np.median(ms - direct)),
        }
    return out


def _measure(url: str, pid: int, stream: bool, concurrency: int, args: argparse.Namespace) -> dict:
    """One load run, with the CPU the serving process spent per request (warm-up included in the count)."""
    cpu0 = _cpu_s(pid)
    out = asyncio.run(
        _load(url, stream=stream, concurrency=concurrency, requests=args.requests, warmup=args.warmup,
              max_tokens=args.max_tokens)
    )  # fmt: skip
    user_ms, sys_ms = (_cpu_s(pid) - cpu0) * 1e3 / (args.requests + args.warmup)
    return out | {"server_cpu_ms_per_request": user_ms + sys_ms, "server_sys_ms_per_request": sys_ms}


def _median_row(runs: list[dict]) -> dict:
    """Each figure's median over the repeats."""
    return {
        key: {m: float(np.median([r[key][m] for r in runs])) for m in runs[0][key]}
        for key in ("latency", "throughput")
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--requests", type=int, default=2000, help="measured requests per configuration and repeat"
    )
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats; figures are their medians")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--throughput-concurrency", type=int, default=32)
    p.add_argument("--also-asyncio", action="store_true", help="measure the gateway on asyncio's loop too")
    p.add_argument("--no-pin", action="store_true", help="leave process placement to the OS scheduler")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/gateway_overhead.json")
    args = p.parse_args(argv)

    cores = {} if args.no_pin else _cores()
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
    servers: dict[str, tuple[str, int]] = {"direct": (replica_url, replica.pid)}
    procs = []
    ctx = mp.get_context("spawn")
    for name, target, loop in variants:
        port = _free_port()
        proc = ctx.Process(target=target, args=(replica_url, port, cores.get("gateway"), loop), daemon=True)
        proc.start()
        procs.append(proc)
        servers[f"{name} ({loop})"] = (f"http://127.0.0.1:{port}", proc.pid)
    load_before = os.getloadavg()
    runs: dict[tuple[str, bool], list[dict]] = {}
    try:
        for url, _ in servers.values():
            asyncio.run(_wait_ready(url))
        for rep in range(args.repeats):
            for stream in (False, True):
                latency = asyncio.run(
                    _latency_interleaved({label: url for label, (url, _) in servers.items()}, stream=stream,
                                         requests=args.requests, warmup=args.warmup, max_tokens=args.max_tokens)
                )  # fmt: skip
                for label, (url, pid) in servers.items():
                    run = {
                        "latency": latency[label],
                        "throughput": _measure(url, pid, stream, args.throughput_concurrency, args),
                    }
                    runs.setdefault((label, stream), []).append(run)
                    lat, thr = run["latency"], run["throughput"]
                    print(
                        f"[{rep + 1}/{args.repeats}] {label:<28} {'stream' if stream else 'plain ':<7} "
                        f"c=1 p50 {lat['p50_ms']:6.2f} p99 {lat['p99_ms']:6.2f} ms | "
                        f"c={thr['concurrency']} {thr['req_per_s']:6.0f} req/s | "
                        f"server CPU {thr['server_cpu_ms_per_request']:.3f} ms/req",
                        flush=True,
                    )
    finally:
        for proc in procs:
            if proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)
            proc.join(10)
        replica.send_signal(signal.SIGTERM)
        replica.wait(20)

    rows = [{"path": label, "stream": stream, **_median_row(r)} for (label, stream), r in runs.items()]
    print(
        f"\nmedians of {args.repeats} repeats (load average before: {load_before[0]:.1f} on {os.cpu_count()} CPUs)"
    )
    print(
        f"{'path':<28} {'mode':<7} {'c=1 p50':>8} {'p99':>8} {'c=32 req/s':>11} {'CPU ms/req':>11} {'req/s/core':>11}"
    )
    for r in rows:
        lat, thr = r["latency"], r["throughput"]
        cpu = thr["server_cpu_ms_per_request"]
        print(
            f"{r['path']:<28} {'stream' if r['stream'] else 'plain':<7} {lat['p50_ms']:8.2f} {lat['p99_ms']:8.2f} "
            f"{thr['req_per_s']:11.0f} {cpu:11.3f} {1e3 / cpu:11.0f}"
        )
    print("\nadded by each proxy (minus direct):")
    added = []
    for r in rows:
        if r["path"] == "direct":
            continue
        direct = next(d for d in rows if d["path"] == "direct" and d["stream"] == r["stream"])
        cpu = r["throughput"]["server_cpu_ms_per_request"]
        a = {
            "path": r["path"],
            "stream": r["stream"],
            "added_p50_ms": r["latency"]["p50_ms"] - direct["latency"]["p50_ms"],
            "paired_added_p50_ms": r["latency"]["paired_added_p50_ms"],
            "added_p99_ms": r["latency"]["p99_ms"] - direct["latency"]["p99_ms"],
            "req_per_s": r["throughput"]["req_per_s"],
            "throughput_vs_direct": r["throughput"]["req_per_s"] / direct["throughput"]["req_per_s"],
            "cpu_ms_per_request": cpu,
            "req_per_s_per_core": 1e3 / cpu,
        }
        added.append(a)
        print(
            f"  {a['path']:<28} {'stream' if a['stream'] else 'plain':<7} added p50 {a['added_p50_ms']:+.2f} ms "
            f"(paired {a['paired_added_p50_ms']:+.2f}), p99 {a['added_p99_ms']:+.2f} ms; {a['req_per_s']:.0f} req/s at c=32 "
            f"({a['throughput_vs_direct']:.2f}x direct); {a['req_per_s_per_core']:.0f} req/s per core by CPU time"
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
            "repeats": args.repeats,
            "cores": {k: sorted(v) for k, v in cores.items()},
            "cpu_count": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "python": platform.python_version(),
            "aiohttp": aiohttp.__version__,
        },
        "rows": rows,
        "added": added,
        "runs": [{"path": label, "stream": stream, "runs": r} for (label, stream), r in runs.items()],
        "targets": {"added_p50_ms_max": 2.0, "gateway_req_per_s_min": 1000},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Reliability of the live runtime on loopback: fuzz, load and faults against a real ``oserve serve``.

    python benchmarks/reliability.py [--fuzz 6000] [--concurrency 1,32,256,1024,4096] [--load-s 8] [--warmup-s 0]
                                     [--client auto|python|wrk] [--speed 20] [--gateway KEY=VALUE ...]
                                     [--json benchmarks/results/reliability.json]

Starts ``oserve serve`` as a subprocess (llama-3-8b on 1x4xH100, 4 x TP1 emulated engines at ``--speed`` times
real time, an API key and an admin token, the controller off; health restores still run), on 127.0.0.1 only, and:

1. **fuzz**: ``--fuzz`` requests at 32 at a time over the OpenAI surface (random and mutated completion / chat
   bodies, random bytes, wrong methods and paths, missing or wrong keys) and the admin surface (corrupted
   deployments, garbage, deep nesting, oversized bodies, no token). Counts statuses; a 5xx is a failure.
2. **load**: closed-loop clients at each concurrency for ``--load-s`` seconds, small requests (16 prompt / 16
   output tokens, every other one streamed; a client refused with 429 waits its Retry-After, as OpenAI's
   clients do): req/s, p50 / p99 latency, errors, the serve process's RSS, and where the CPU went (cores used
   by the client, the serve process, its engines, the kernel; ms of each per answered request). ``--client wrk``
   drives the level with wrk instead (``reliability_wrk.py``: the same bodies and answer checks).
3. **faults under load** (64 clients, 64-token answers, every other streamed): kill -9 a replica; SIGSTOP one
   (SIGCONT after 8 s); a switch 4 x TP1 -> TP4 (every GPU changes: a gap) and back; a switch whose new engine is
   killed while it starts (the orchestrator rolls back). Per case: requests sent, plain ones lost (must be 0),
   streams cut (an error event), refused (429/503), seconds until ``/health`` is ok again, and what it said.

Bounded: each phase stops by itself; the serve is stopped at the end (SIGTERM, then SIGKILL). The load
generator shares the machine's cores with the serve and its engines, so on a small box it, not the gateway, may
be what saturates first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import yaml

from oserve.runtime.loop import tune_gc
from reliability_cpu import HEADER, breakdown, format_row, snapshot
from reliability_fuzz import ADMIN, AUTH, FOUR, KEY, MODEL, TOKEN, TP4, fuzz
from reliability_wrk import run_wrk, wrk_path


# -- the serve process ------------------------------------------------------------------------------------------
class Serve:
    """``oserve serve`` in a subprocess on loopback; its engines are its children."""

    def __init__(self, speed: float, workdir: Path, gateway: dict[str, Any] | None = None) -> None:
        first = workdir / "first.yaml"
        first.write_text(yaml.safe_dump(FOUR))
        config = workdir / "serve.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "deployment": str(first),
                    "backend": {"speed": speed},
                    "orchestrator": {"log_dir": str(workdir / "logs"), "drain_timeout_s": 20},
                    "gateway": {
                        "host": "127.0.0.1",
                        "port": 0,
                        "api_key": KEY,
                        "admin_token": TOKEN,
                        **(gateway or {}),
                    },
                    "controller": {"enabled": False, "health_interval_s": 0.5},
                }
            )
        )
        self.log = workdir / "serve.log"
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "oserve.cli.main", "serve", "--config", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            found = re.search(r"OpenAI API at (http://127\.0\.0\.1:\d+)/v1", self.log.read_text())
            if found:
                self.url = found.group(1)
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        sys.exit(f"serve did not start: {self.log.read_text()[-2000:]}")

    def engines(self) -> dict[int, str]:
        """pid -> command line of the serve's live engine processes."""
        out = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                state = stat.rsplit(")", 1)[1].split()[0]
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (OSError, ValueError, IndexError):
                continue
            if ppid == self.proc.pid and " engine " in cmd and state != "Z":
                out[int(entry.name)] = cmd
        return out

    def rss_mib(self) -> float:
        try:
            text = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return float("nan")
        return int(re.search(r"VmRSS:\s+(\d+)", text).group(1)) / 1024

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in self.engines():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# -- 2 and 3. load ----------------------------------------------------------------------------------------------
def _retry_after(r: aiohttp.ClientResponse) -> float:
    """The refusal's ``Retry-After`` in seconds (1 when absent or not a number of seconds)."""
    try:
        return max(float(r.headers.get("Retry-After", "1")), 0.0)
    except ValueError:
        return 1.0


async def _one(http: aiohttp.ClientSession, url: str, stream: bool, tokens: int) -> tuple[str, float, float]:
    """('ok' | 'lost' | 'cut' | 'refused' | 'error:<status>', seconds, Retry-After seconds of a refusal)."""
    body = {"model": MODEL, "prompt": "the " * 15, "max_tokens": tokens, "stream": stream}
    t = time.monotonic()
    try:
        async with http.post(f"{url}/v1/completions", json=body, headers=AUTH) as r:
            if r.status in (429, 503):
                await r.read()
                return "refused", time.monotonic() - t, _retry_after(r)
            if r.status != 200:
                await r.read()
                return f"error:{r.status}", time.monotonic() - t, 0.0
            if not stream:
                got = (await r.json())["usage"]["completion_tokens"]
                return ("ok" if got == tokens else "lost"), time.monotonic() - t, 0.0
            text = await r.text()
            if '"error"' in text:
                return "cut", time.monotonic() - t, 0.0
            ok = text.rstrip().endswith("data: [DONE]") and text.count("data: ") == tokens + 1
            return ("ok" if ok else "cut"), time.monotonic() - t, 0.0
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError):
        return ("cut" if stream else "lost"), time.monotonic() - t, 0.0


async def closed_loop(
    url: str,
    clients: int,
    seconds: float,
    tokens: int,
    stop: asyncio.Event | None = None,
    ok_at: list[float] | None = None,
):
    """``clients`` sending back to back for ``seconds`` (or until ``stop``); outcomes as (kind, stream, s);
    ``ok_at`` collects the monotonic time of each good answer."""
    out: list[tuple[str, bool, float]] = []
    end = time.monotonic() + seconds
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as http:

        async def client(i: int) -> None:
            n = i
            while time.monotonic() < end and not (stop is not None and stop.is_set()):
                stream = n % 2 == 0
                kind, s, retry_after_s = await _one(http, url, stream, tokens)
                out.append((kind, stream, s))
                if ok_at is not None and kind == "ok":
                    ok_at.append(time.monotonic())
                n += 1
                if kind == "refused":  # as OpenAI's clients do: wait its Retry-After, then try again
                    await asyncio.sleep(retry_after_s)

        await asyncio.gather(*(client(i) for i in range(clients)))
    return out


async def _python_level(url: str, clients: int, seconds: float, warmup_s: float) -> dict[str, Any]:
    """One level of the benchmark's own client: good answers over the whole level (its start, with every
    client's first connection, to its last answer) and the steady window from ``warmup_s`` to ``seconds``."""
    t0 = time.monotonic()
    ok_at: list[float] = []
    outcomes = await closed_loop(url, clients, seconds, 16, ok_at=ok_at)
    wall = time.monotonic() - t0
    ok = np.array([s for k, _, s in outcomes if k == "ok"])
    return {
        "ok": len(ok),
        "requests": len(outcomes),
        "ok_per_s": len(ok) / wall,
        "p50_s": float(np.percentile(ok, 50)) if len(ok) else None,
        "p99_s": float(np.percentile(ok, 99)) if len(ok) else None,
        "errors": len(outcomes) - len(ok),
        "error_kinds": dict(Counter(k for k, _, _ in outcomes if k != "ok")),
        "steady_ok_per_s": (
            sum(t0 + warmup_s <= t < t0 + seconds for t in ok_at) / (seconds - warmup_s)
            if 0 < warmup_s < seconds
            else None
        ),
        "client_cpu_s": 0.0,  # in this process: the CPU snapshot counts it
    }


async def _window_cpu(serve_pid: int, engines: list[int], warmup_s: float, seconds: float):
    """CPU snapshots at ``warmup_s`` and ``seconds`` into the level (the steady window), or None without one."""
    if not 0 < warmup_s < seconds:
        return None
    await asyncio.sleep(warmup_s)
    first = snapshot(serve_pid, engines)
    await asyncio.sleep(seconds - warmup_s)
    return first, snapshot(serve_pid, engines)


async def load(
    serve: Serve, levels: list[int], seconds: float, warmup_s: float = 0.0, client: str = "python"
) -> list[dict[str, Any]]:
    """Per level: the client's figures (``_python_level``, ``run_wrk``), the serve's peak RSS and where the
    machine's CPU went (``reliability_cpu``)."""
    rows = []
    for clients in levels:
        engines = list(serve.engines())
        cpu_before = snapshot(serve.proc.pid, engines)
        window = asyncio.create_task(_window_cpu(serve.proc.pid, engines, warmup_s, seconds))
        rss = [serve.rss_mib()]
        if client == "wrk":
            task = asyncio.create_task(asyncio.to_thread(run_wrk, serve.url, KEY, clients, seconds, warmup_s))
        else:
            task = asyncio.create_task(_python_level(serve.url, clients, seconds, warmup_s))
        while not task.done():
            await asyncio.sleep(0.5)
            rss.append(serve.rss_mib())
        row = task.result()
        cpu_after = snapshot(serve.proc.pid, list(cpu_before.engines_s))
        wrk_cpu_s = row.pop("client_cpu_s")
        cpu = breakdown(cpu_before, cpu_after, row["ok"], client_extra_s=wrk_cpu_s)
        steady = await window
        if steady is not None and row["steady_ok_per_s"] is not None:  # wrk's CPU: its level's average rate
            w0, w1 = steady
            extra = wrk_cpu_s * (w1.at_s - w0.at_s) / max(cpu_after.at_s - cpu_before.at_s, 1e-9)
            ok_in = row["steady_ok_per_s"] * (w1.at_s - w0.at_s)
            row["cpu_steady"] = breakdown(w0, w1, round(ok_in), client_extra_s=extra)
        # the gateway's CPU per answered request: less sensitive than req/s to what else the box runs
        rows.append({"clients": clients, **row, "rss_mib": max(rss), "gateway_cpu_ms_per_ok": cpu["serve_ms_per_ok"],
                     "cpu": cpu})  # fmt: skip
        await asyncio.sleep(1.0)  # let sockets close between levels
    return rows


async def _health(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    try:
        async with http.get(f"{url}/health", timeout=aiohttp.ClientTimeout(total=2)) as r:
            body = await r.json()
            return r.status, body.get("status", "?") + (f": {body['reason']}" if body.get("reason") else "")
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return 0, type(exc).__name__


async def _admin_post(url: str, deployment: dict[str, Any]) -> tuple[int, str]:
    timeout = aiohttp.ClientTimeout(total=300)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.post(f"{url}/admin/deployment", json=deployment, headers=ADMIN) as r,
    ):
        body = await r.json()
        error = (body.get("error") or {}).get("message", "")
        return r.status, error or f"converged in {body.get('converge_s')} s"


RECOVERY_WAIT_S = 60.0  # after the watch, how much longer to wait for /health to be ok again
STOPPED_S = 8.0  # a SIGSTOPped replica resumes after this long (the probe needs two missed 2 s probes)


async def _kill_new_engine(serve: Serve, before: set[int], post: asyncio.Task) -> None:
    """SIGKILL the first engine the switch launches, while it starts: the start fails."""
    while not post.done():
        fresh = set(serve.engines()) - before
        if fresh:
            for pid in fresh:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            return
        await asyncio.sleep(0.02)


async def fault(serve: Serve, name: str, clients: int, seconds: float) -> dict[str, Any]:
    """One fault case under load: inject at 2 s, watch /health every 0.1 s until the load ends."""
    stop = asyncio.Event()
    task = asyncio.create_task(closed_loop(serve.url, clients, seconds + 60, 64, stop))
    said: Counter[str] = Counter()
    injected_at = None
    recovered_at = None
    note = ""
    t0 = time.monotonic()
    async with aiohttp.ClientSession() as http:
        await asyncio.sleep(2.0)
        engines = serve.engines()
        victim = min(engines) if engines else None
        injected_at = time.monotonic()
        post: asyncio.Task | None = None
        killer: asyncio.Task | None = None
        if name == "kill -9 a replica" and victim:
            os.kill(victim, signal.SIGKILL)
        elif name == "SIGSTOP a replica" and victim:
            os.kill(victim, signal.SIGSTOP)
        elif name == "switch 4 x TP1 -> TP4":
            post = asyncio.create_task(_admin_post(serve.url, TP4))
        elif name == "switch TP4 -> 4 x TP1":
            post = asyncio.create_task(_admin_post(serve.url, FOUR))
        elif name == "switch whose new engine dies":
            post = asyncio.create_task(_admin_post(serve.url, TP4))
            killer = asyncio.create_task(_kill_new_engine(serve, set(engines), post))
        resumed = False
        healthy = False
        while (
            time.monotonic() - injected_at < seconds
            or (post is not None and not post.done())
            or (not healthy and time.monotonic() - injected_at < seconds + RECOVERY_WAIT_S)
        ):
            status, text = await _health(http, serve.url)
            said[f"{status} {text[:70]}"] += 1
            if name == "SIGSTOP a replica" and not resumed and time.monotonic() - injected_at > STOPPED_S:
                os.kill(victim, signal.SIGCONT)
                resumed = True
            healthy = status == 200 and text == "ok"
            recovered_at = (recovered_at or time.monotonic()) if healthy else None
            await asyncio.sleep(0.1)
        if name == "SIGSTOP a replica" and not resumed and victim:
            os.kill(victim, signal.SIGCONT)
        if post is not None:
            note = "%s %s" % await post
        if killer is not None:
            await killer
    stop.set()
    outcomes = await task
    kinds = Counter(k for k, _, _ in outcomes)
    return {
        "case": name,
        "sent": len(outcomes),
        "ok": kinds.get("ok", 0),
        "plain_lost": sum(1 for k, st, _ in outcomes if not st and (k == "lost" or k.startswith("error"))),
        "streams_cut": sum(1 for k, st, _ in outcomes if st and k == "cut"),
        "refused": kinds.get("refused", 0),
        "other": {k: v for k, v in kinds.items() if k not in ("ok", "lost", "cut", "refused")},
        "recover_s": None if recovered_at is None else max(0.0, recovered_at - injected_at),
        "health_said": dict(said.most_common(4)),
        "note": note[:300],
        "seconds": time.monotonic() - t0,
    }


async def wait_ok(url: str, timeout_s: float = 120) -> None:
    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status, text = await _health(http, url)
            if status == 200 and text == "ok":
                return
            await asyncio.sleep(0.2)


async def main_async(args: argparse.Namespace, serve: Serve) -> dict[str, Any]:
    result: dict[str, Any] = {"config": {k: v for k, v in vars(args).items() if k != "json"}}
    phases = set(args.phases.split(","))
    if "fuzz" in phases:
        result["fuzz"] = await fuzz(serve.url, args.fuzz, args.seed)
    await wait_ok(serve.url)
    if "load" in phases:
        levels = [int(c) for c in args.concurrency.split(",")]
        result["load"] = await load(serve, levels, args.load_s, args.warmup_s, args.client)
    cases = ["kill -9 a replica", "SIGSTOP a replica", "switch 4 x TP1 -> TP4", "switch TP4 -> 4 x TP1",
             "switch whose new engine dies"]  # fmt: skip
    result["faults"] = []
    for case in cases if "faults" in phases else []:
        await wait_ok(serve.url)
        result["faults"].append(await fault(serve, case, args.fault_clients, args.fault_s))
    return result


def report(result: dict[str, Any]) -> None:
    if "fuzz" in result:
        f = result["fuzz"]
        print(f"fuzz: {f['requests']} requests in {f['seconds']:.1f} s: {f['5xx']} 5xx, "
              f"{f['connection_errors']} connection errors; statuses {f['statuses']}")  # fmt: skip
        for ex in f["examples"]:
            print(f"    {ex}")
    if result.get("load"):
        print(f"\n{'clients':>7} {'requests':>8} {'ok/s':>8} {'p50 s':>7} {'p99 s':>7} {'errors':>6} "
              f"{'RSS MiB':>8} {'gw CPU ms/ok':>12}")  # fmt: skip
        for r in result["load"]:
            print(f"{r['clients']:>7} {r['requests']:>8} {r['ok_per_s']:>8.1f} {r['p50_s'] or 0:>7.3f} "
                  f"{r['p99_s'] or 0:>7.3f} {r['errors']:>6} {r['rss_mib']:>8.0f} "
                  f"{r['gateway_cpu_ms_per_ok']:>12.2f}  {r['error_kinds'] or ''}")  # fmt: skip
        print(f"\nwhere the CPU went ({os.cpu_count()} cores):\n{HEADER}")
        for r in result["load"]:
            print(format_row(r["clients"], r["cpu"]))
        for r in result["load"]:
            if "cpu_steady" in r:
                print(format_row(r["clients"], r["cpu_steady"]) + "   (steady window)")
        peak = max(r["ok_per_s"] for r in result["load"])
        last = result["load"][-1]
        print(f"  at {last['clients']} clients: {last['ok_per_s'] / peak:.0%} of the peak {peak:.1f} ok/s")
        if last.get("steady_ok_per_s") is not None:
            steady = [r["steady_ok_per_s"] for r in result["load"]]
            print(f"  steady window (after --warmup-s): {' / '.join(f'{x:.1f}' for x in steady)} ok/s; at "
                  f"{last['clients']} clients {steady[-1] / max(steady):.0%} of the peak {max(steady):.1f}")  # fmt: skip
    if not result["faults"]:
        return
    print(
        f"\n{'fault':<30} {'sent':>6} {'ok':>6} {'lost':>5} {'cut':>5} {'refused':>7} {'recover s':>9}  health said"
    )
    for c in result["faults"]:
        said = "; ".join(f"{k} x{v}" for k, v in c["health_said"].items())
        rec = "-" if c["recover_s"] is None else f"{c['recover_s']:.1f}"
        print(f"{c['case']:<30} {c['sent']:>6} {c['ok']:>6} {c['plain_lost']:>5} {c['streams_cut']:>5} "
              f"{c['refused']:>7} {rec:>9}  {said}")  # fmt: skip
        if c["note"]:
            print(f"    admin: {c['note'][:160]}")
        if c["other"]:
            print(f"    other: {c['other']}")


def _setting(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        sys.exit(f"--gateway {text!r}: expected KEY=VALUE")
    return key, yaml.safe_load(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fuzz", type=int, default=6000, help="fuzzed requests (half OpenAI, half admin)")
    parser.add_argument("--concurrency", default="1,32,256,1024,4096")
    parser.add_argument("--load-s", type=float, default=8.0, help="seconds per concurrency level")
    parser.add_argument(
        "--warmup-s",
        type=float,
        default=0.0,
        help="also report ok/s from this far into each level to its end",
    )
    parser.add_argument(
        "--client",
        choices=["auto", "python", "wrk"],
        default="auto",
        help="the load phase's load generator: wrk (its own process; auto, the default: when on PATH) or this "
        "process's aiohttp clients (which take a share of the cores the serve runs on)",
    )
    parser.add_argument("--fault-clients", type=int, default=64)
    parser.add_argument("--fault-s", type=float, default=12.0, help="seconds watched after each fault")
    parser.add_argument("--speed", type=float, default=20.0, help="emulated engines' clock vs real time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--client-gc", type=int, default=20000, help="the load generator's gen0 GC threshold (0: Python's)"
    )
    parser.add_argument(
        "--gateway",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a serve config gateway setting (YAML value), e.g. max_inflight_per_replica=128; repeatable",
    )
    parser.add_argument("--phases", default="fuzz,load,faults", help="which of fuzz,load,faults to run")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/reliability.json"))
    args = parser.parse_args()
    if args.client == "auto":
        args.client = "wrk" if wrk_path() else "python"
    elif args.client == "wrk" and not wrk_path():
        sys.exit("--client wrk: wrk is not on PATH (Debian: apt-get install wrk)")
    workdir = Path(tempfile.mkdtemp(prefix="oserve-reliability-"))
    serve = Serve(args.speed, workdir, dict(_setting(kv) for kv in args.gateway))
    # the load generator holds up to 4,096 requests too: its collector tuned as the serve's (else it, not the
    # gateway, is what slows at 4,096 clients on a small box)
    tune_gc(args.client_gc)
    try:
        result = asyncio.run(main_async(args, serve))
    finally:
        serve.stop()
    report(result)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.json} (serve log: {serve.log})")


if __name__ == "__main__":
    main()

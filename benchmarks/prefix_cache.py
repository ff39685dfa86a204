"""Prefix caching in the simulator on the Mooncake trace: how much one replica's cache catches, and what routing by
prefix buys over routing by load.

    python benchmarks/prefix_cache.py [--traces ../shared/data/traces] [--loads 2,3,4] [--spans 4,16,1e6]
                                      [--json benchmarks/results/prefix_cache.json]

Model Llama-3.1-8B on H100; trace ``mooncake_synthetic.jsonl`` (3,993 requests over 1,022 s, mean prompt 15k
tokens, ``hash_ids`` per 512-token block); SLO TTFT 2 s, TPOT 0.2 s (the simulator's default).

(a) One replica (TP1, TP2, TP8: KV caches of 0.4M, 0.9M and 4.2M tokens against 22M tokens of distinct blocks) at
    the trace's own rate, prefix caching on: its token hit rate (``prefix_hit_rate``: hit tokens / prompt tokens)
    against the trace's bound with an unbounded cache, computed from ``hash_ids`` alone (by blocks, the README's
    64%, and by tokens as vLLM counts them: whole blocks of the longest seen prefix, the last token computed), and
    against a plain LRU of the replica's KV capacity over ``hash_ids`` (no concurrency, no running requests
    holding blocks: an independent check of the engine's cache, which should come close below it); and TTFT with
    caching on and off.
(b) 4 x TP2 on 1x8xH100, the trace time-compressed by each of ``--loads`` (``scale_rate(method="compress")``:
    the same requests and hashes, arriving faster; resampling would duplicate prompts and inflate hits):
    ``allowed-least-load`` with caching off, with it on, and ``prefix-aware`` (its per-replica index bounded to
    the replica's KV cache in 512-token blocks). Reported: hit rate, TTFT p50/p99, goodput, and prefix-aware's
    ratios to allowed-least-load with caching on (TTFT baseline / prefix-aware, goodput prefix-aware / baseline:
    above 1 is better); for reference, the plain LRU of one replica's cache and of the four pooled; and prefix-aware
    with each of ``--spans`` as its load span (how much busier a holder may be), to show how much that knob moves.
(c) The hot spot the load span guards against: the same x3 traffic with one 512-token system prompt block put in
    front of every prompt (so every replica that served anything holds a sliver of every request's prefix, and the
    first one holds it first): allowed-least-load, prefix-aware, and prefix-aware with a load span of 1e6
    (prefix affinity with load only breaking ties).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import OrderedDict
from functools import partial
from pathlib import Path

from oserve.perf import CostModel
from oserve.routing import PrefixAware
from oserve.sim import simulate
from oserve.sim.prefix_cache import MOONCAKE_BLOCK_TOKENS, infinite_hit_rate
from oserve.spec import Deployment, ReplicaConfig, get_gpu, get_model, parse_cluster
from oserve.trace import Trace, load_trace, scale_rate

MODEL = "llama-3.1-8b"
KEYS = ("prefix_hit_rate", "ttft_p50", "ttft_p99", "goodput_rps", "slo_attainment", "preemptions")


def _figures(summary: dict) -> dict:
    return {k: summary[k] for k in KEYS}


def lru_hit_rate(trace, capacity_tokens: int) -> float:
    """Token hit rate of one LRU of ``capacity_tokens`` over the trace's full prompt blocks, in arrival order: the
    longest cached prefix of whole blocks (the last token computed) hits, then all the prompt's blocks are used."""
    lru: OrderedDict[int, None] = OrderedDict()
    most_blocks = capacity_tokens // MOONCAKE_BLOCK_TOKENS
    hit = total = 0
    for ids, prompt in zip(trace.extras["hash_ids"], trace.prompt_tokens.tolist(), strict=True):
        ids = ids.tolist()
        most = min(len(ids), (prompt - 1) // MOONCAKE_BLOCK_TOKENS)
        j = 0
        while j < most and ids[j] in lru:
            j += 1
        hit += j * MOONCAKE_BLOCK_TOKENS
        total += prompt
        for h in ids[: prompt // MOONCAKE_BLOCK_TOKENS]:
            lru[h] = None
            lru.move_to_end(h)
        while len(lru) > most_blocks:
            lru.popitem(last=False)
    return hit / total


def single_replica(trace, model) -> list[dict]:
    rows = []
    for tp in (1, 2, 8):
        cluster = parse_cluster(f"1x{tp}xH100")
        row = {"tp": tp}
        for on in (True, False):
            config = ReplicaConfig(get_gpu("H100"), tp=tp, enable_prefix_caching=on)
            dep = Deployment.homogeneous(model.name, cluster, config, count=1)
            row["kv_tokens"] = CostModel(model, config).kv_capacity_tokens
            s = simulate(trace, dep, model, cluster, router="allowed-least-load").summary
            row["on" if on else "off"] = _figures(s)
        row["lru_hit_rate"] = lru_hit_rate(trace, row["kv_tokens"])
        rows.append(row)
        on, off = row["on"], row["off"]
        print(
            f"  1 x TP{tp:<2} KV {row['kv_tokens'] / 1e6:>4.1f}M tokens  hit {on['prefix_hit_rate']:>6.1%} (LRU {row['lru_hit_rate']:>5.1%})  "
            f"TTFT p50 {on['ttft_p50']:.3f}/{off['ttft_p50']:.3f} s  p99 {on['ttft_p99']:.2f}/{off['ttft_p99']:.2f} s "
            "(on/off)",
            flush=True,
        )
    return rows


def routed(trace, model, load: float, spans: list[float]) -> dict:
    cluster = parse_cluster("1x8xH100")
    config = ReplicaConfig(get_gpu("H100"), tp=2)
    fast = scale_rate(trace, load, method="compress")
    runs = {
        "allowed-least-load, no cache": (
            ReplicaConfig(get_gpu("H100"), tp=2, enable_prefix_caching=False),
            "allowed-least-load",
        ),
        "allowed-least-load": (config, "allowed-least-load"),
        "prefix-aware": (config, "prefix-aware"),  # its index sized to the KV cache by the simulator
    }
    for span in spans:  # how much the load span (default 8) matters
        runs[f"prefix-aware, load_span {span:g}"] = (config, partial(PrefixAware, load_span=span))
    kv = CostModel(model, config).kv_capacity_tokens
    out = {
        "load": load,
        "rate_rps": len(fast) / fast.duration_s,
        "lru_hit_rate_one": lru_hit_rate(trace, kv),
        "lru_hit_rate_pooled": lru_hit_rate(trace, 4 * kv),
        "routers": {},
    }
    for name, (c, router) in runs.items():
        dep = Deployment.homogeneous(model.name, cluster, c, count=4)
        out["routers"][name] = _figures(simulate(fast, dep, model, cluster, router=router).summary)
    base, pa = out["routers"]["allowed-least-load"], out["routers"]["prefix-aware"]
    out["ttft_p50_ratio"] = base["ttft_p50"] / pa["ttft_p50"]
    out["ttft_p99_ratio"] = base["ttft_p99"] / pa["ttft_p99"]
    out["goodput_ratio"] = pa["goodput_rps"] / base["goodput_rps"] if base["goodput_rps"] else float("nan")
    for name, f in out["routers"].items():
        print(
            f"  x{load:<4g} {out['rate_rps']:>5.1f} req/s  {name:<32} hit {f['prefix_hit_rate']:>6.1%}  "
            f"TTFT p50 {f['ttft_p50']:>6.3f} s  p99 {f['ttft_p99']:>6.2f} s  goodput {f['goodput_rps']:>6.2f} req/s "
            f"({f['slo_attainment']:.1%} in SLO)",
            flush=True,
        )
    print(
        f"  x{load:<4g} prefix-aware vs allowed-least-load: TTFT p50 x{out['ttft_p50_ratio']:.2f}, "
        f"p99 x{out['ttft_p99_ratio']:.2f}, goodput x{out['goodput_ratio']:.2f}  (LRU of one replica's cache "
        f"{out['lru_hit_rate_one']:.1%}, of the four pooled {out['lru_hit_rate_pooled']:.1%})",
        flush=True,
    )
    return out


def shared_system_prompt(trace, model, load: float) -> dict:
    fast = scale_rate(trace, load, method="compress")
    ids = [[-1, *row.tolist()] for row in fast.extras["hash_ids"]]
    shared = Trace.from_arrays(
        fast.arrival_s,
        fast.prompt_tokens + MOONCAKE_BLOCK_TOKENS,
        fast.output_tokens,
        duration_s=fast.duration_s,
        extras={"hash_ids": ids},
    )
    cluster = parse_cluster("1x8xH100")
    dep = Deployment.homogeneous(model.name, cluster, ReplicaConfig(get_gpu("H100"), tp=2), count=4)
    out = {"load": load, "routers": {}}
    for name, router in (
        ("allowed-least-load", "allowed-least-load"),
        ("prefix-aware", "prefix-aware"),
        ("prefix-aware, load_span 1e6", partial(PrefixAware, load_span=1e6)),
    ):
        result = simulate(shared, dep, model, cluster, router=router)
        f = _figures(result.summary)
        served = result.records["replica"].value_counts()
        f["busiest_replica_share"] = float(served.max() / served.sum())
        out["routers"][name] = f
        print(
            f"  x{load:<4g} {name:<32} hit {f['prefix_hit_rate']:>6.1%}  TTFT p50 {f['ttft_p50']:>6.3f} s  "
            f"p99 {f['ttft_p99']:>6.2f} s  goodput {f['goodput_rps']:>6.2f} req/s  busiest replica "
            f"{f['busiest_replica_share']:.0%} of requests",
            flush=True,
        )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--traces", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/traces")
    p.add_argument("--loads", default="2,3,4", help="time-compression factors of the trace for (b)")
    p.add_argument("--spans", default="4,16,1e6", help="other load spans of prefix-aware to try in (b)")
    p.add_argument("--json", type=Path, default=Path(__file__).resolve().parent / "results/prefix_cache.json")
    args = p.parse_args(argv)
    path = args.traces / "mooncake_synthetic.jsonl"
    if not path.is_file():
        print(f"trace not found: {path}", file=sys.stderr)
        return 1
    start = time.perf_counter()
    trace, model = load_trace(path), get_model(MODEL)
    ids = trace.extras["hash_ids"]
    bound = {"blocks": infinite_hit_rate(ids), "tokens": infinite_hit_rate(ids, trace.prompt_tokens)}
    print(f"(a) one replica, {len(trace)} requests at {len(trace) / trace.duration_s:.1f} req/s")
    print(
        f"  unbounded cache (from hash_ids): {bound['blocks']:.1%} of blocks, {bound['tokens']:.1%} of prompt tokens"
    )
    single = single_replica(trace, model)
    print("(b) 4 x TP2 on 1x8xH100")
    spans = [float(x) for x in args.spans.split(",") if x]
    loads = [routed(trace, model, float(x), spans) for x in args.loads.split(",")]
    print("(c) every prompt behind one shared 512-token system prompt block, 4 x TP2")
    hot = shared_system_prompt(trace, model, 3.0)
    print(f"{time.perf_counter() - start:.0f} s")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "model": MODEL,
        "trace": path.name,
        "unbounded": bound,
        "single": single,
        "routed": loads,
        "shared_prompt": hot,
    }
    args.json.write_text(json.dumps(data, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

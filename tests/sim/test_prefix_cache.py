"""Prefix caching as vLLM v1 does it: hits of the longest cached prefix, shared blocks, LRU eviction under pressure,
all hand-computed on 16-token blocks named by 32-token hash blocks (2 engine blocks per hash block)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from factories import make_model, make_replica
from oserve.errors import ConfigError
from oserve.perf import BatchStats, CostModel
from oserve.sim import Engine, Requests, StepTimer, simulate
from oserve.sim.prefix_cache import PrefixCache, block_hashes, infinite_hit_rate
from oserve.spec import Deployment, get_model, parse_cluster
from oserve.trace import Trace

COST = CostModel(make_model(), make_replica())


def _engine(prompts, outputs, hashes, kv_blocks=10_000):
    req = Requests.of(np.array(prompts), np.array(outputs), hashes)
    eng = Engine(
        StepTimer(COST),
        req,
        kv_blocks=kv_blocks,
        block_size=16,
        max_num_seqs=16,
        max_num_batched_tokens=4096,
        prefix_cache=PrefixCache(32, 16),
    )
    return eng, req


def _drain(eng: Engine, now: float = 0.0) -> float:
    while (end := eng.step(now)) is not None:
        now = end
    return now


def test_cache_counts_holders_and_evicts_least_recently_freed_tail_first() -> None:
    cache = PrefixCache(32, 16)
    assert cache.register(1) and cache.register(2) and not cache.register(1)
    assert cache.lookup([1, 2, 3], 3) == (2, 0)
    cache.acquire([1, 2])  # a second holder
    assert cache.release([1, 2]) == 0 and cache.ref == {1: 1, 2: 1}
    assert cache.release([1, 2]) == 2 and list(cache.lru) == [2, 1]  # the tail is freed first
    assert cache.free_blocks == 4 and cache.lookup([1, 2], 2) == (2, 2)
    cache.trim(3)  # the pool needs a block: the tail goes, the prefix stays
    assert list(cache.lru) == [1] and cache.lookup([1, 2], 2) == (1, 1)
    cache.acquire([1])
    assert cache.ref == {1: 1} and not cache.lru


def test_block_size_must_divide_the_hash_block() -> None:
    with pytest.raises(ConfigError, match="block_size"):
        PrefixCache(512, 48)


def test_hit_skips_the_cached_prefix_and_keeps_the_last_token() -> None:
    # request 0 computes blocks 1, 2, 3 (96 of its 100 tokens); request 1 shares 1, 2 (64 tokens);
    # request 2's 64-token prompt is all cached, but its last token is computed: a 32-token hit
    eng, req = _engine([100, 100, 64], [2, 2, 2], [[1, 2, 3], [1, 2, 9], [1, 2]])
    eng.add(0)
    now = _drain(eng)
    assert eng.free_blocks == eng.total_blocks and eng.cache.free_blocks == 6 and not eng.cache.ref
    eng.add(1)
    end = eng.step(now)
    assert end - now == pytest.approx(COST.iteration_time(BatchStats.of(prefill=[(36, 64)])), rel=1e-12)
    now = _drain(eng, end)
    eng.add(2)
    end = eng.step(now)
    assert end - now == pytest.approx(COST.iteration_time(BatchStats.of(prefill=[(32, 32)])), rel=1e-12)
    _drain(eng, end)
    assert req.cached == [0, 64, 32]
    assert (eng.cache.queries, eng.cache.hits) == (264, 96)  # tokens, as vLLM's counters
    assert set(eng.cache.lru) == {1, 2, 3, 9} and eng.free_blocks == eng.total_blocks


def test_running_requests_share_cached_blocks() -> None:
    eng, req = _engine([100, 100], [50, 50], [[1, 2, 3], [1, 2, 4]])
    eng.add(0)
    now = eng.step(0.0)  # request 0's prefill: 7 blocks, hash blocks 1, 2, 3 cached
    assert eng.free_blocks == eng.total_blocks - 7
    eng.add(1)
    eng.step(now)  # request 1 holds 1, 2 with request 0 and takes 7 - 4 blocks (one more for 0's decode)
    assert eng.cache.ref == {1: 2, 2: 2, 3: 1, 4: 1}
    assert eng.free_blocks == eng.total_blocks - 7 - 3
    _drain(eng)
    assert not eng.cache.ref and set(eng.cache.lru) == {1, 2, 3, 4}
    assert eng.free_blocks == eng.total_blocks and eng.outstanding == 0
    assert req.cached == [0, 64]


def test_eviction_takes_the_oldest_cached_blocks_only_when_the_pool_needs_room() -> None:
    # 8 blocks. Request 0 leaves 1, 2, 3 cached (6 blocks free and cached, LRU order 3, 2, 1);
    # request 1 needs 4 blocks: 2 blank, then 3 is evicted (2 blocks); 1, 2 stay and request 2 hits them
    eng, req = _engine([100, 64, 100], [1, 1, 1], [[1, 2, 3], [7, 8], [1, 2, 3]], kv_blocks=8)
    eng.add(0)
    now = _drain(eng)
    assert list(eng.cache.lru) == [3, 2, 1]
    eng.add(1)
    now = _drain(eng, now)
    assert list(eng.cache.lru) == [2, 1, 8, 7]
    eng.add(2)
    _drain(eng, now)
    assert req.cached == [0, 0, 64]


def _trace(prompts, arrivals, hashes):
    n = len(prompts)
    return Trace.from_arrays(arrivals, prompts, [4] * n, extras={"hash_ids": hashes})


@pytest.mark.parametrize("enabled", [True, False])
def test_replayed_identical_request_is_served_faster(enabled: bool) -> None:
    ids = [list(range(4)), list(range(4))]  # 2,048 tokens: 3 whole 512-token blocks can hit
    trace = _trace([2048, 2048], [0.0, 10.0], ids)
    config = make_replica(enable_prefix_caching=enabled)
    cluster = parse_cluster("1x1xH100")
    dep = Deployment.homogeneous("llama-3.1-8b", cluster, config, count=1)
    result = simulate(trace, dep, get_model("llama-3.1-8b"), cluster, router="least-tokens")
    ttft = (result.records["first_token_s"] - result.records["arrival_s"]).to_numpy()
    if enabled:
        assert ttft[1] < 0.6 * ttft[0]
        assert result.summary["prefix_hit_rate"] == pytest.approx(1536 / 4096)
        assert result.records["cached_tokens"].tolist() == [0, 1536]
    else:
        assert ttft[1] == pytest.approx(ttft[0], rel=1e-9)
        assert result.summary["prefix_hit_rate"] == 0.0


def test_trace_without_hashes_has_no_cache() -> None:
    trace = Trace.from_arrays([0.0, 10.0], [2048, 2048], [4, 4])
    cluster = parse_cluster("1x1xH100")
    dep = Deployment.homogeneous("m", cluster, make_replica(), count=1)
    result = simulate(trace, dep, make_model(), cluster, router="least-tokens")
    ttft = (result.records["first_token_s"] - result.records["arrival_s"]).to_numpy()
    assert ttft[1] == pytest.approx(ttft[0], rel=1e-9) and result.summary["prefix_hit_rate"] == 0.0


def test_block_hashes_are_chained_over_full_blocks() -> None:
    a = block_hashes(list(range(40)), 16)
    b = block_hashes(list(range(32)) + [7] * 8, 16)
    c = block_hashes([5, *range(1, 40)], 16)
    assert len(a) == 2 and a == b  # the partial third block is not hashed
    assert c[0] != a[0] and c[1] != a[1]  # a different first block changes every later hash


def test_infinite_hit_rate_by_blocks_and_by_tokens() -> None:
    ids = [[1, 2], [1, 2, 3], [4]]
    assert infinite_hit_rate(ids) == pytest.approx(2 / 6)
    # by tokens: request 1 (1,536 tokens) hits 1, 2 (1,024); request 0's blocks are full, request 2 misses
    assert infinite_hit_rate(ids, [1024, 1536, 512]) == pytest.approx(1024 / 3072)


@pytest.fixture(scope="module")
def mooncake_slice():
    from pathlib import Path

    from oserve.trace import load_trace

    path = Path(__file__).resolve().parents[2].parent / "shared/data/traces/mooncake_synthetic.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    trace = load_trace(path)
    return trace.take(trace.arrival_s < 120.0, duration_s=120.0)


@pytest.mark.parametrize("router", ["prefix-aware", "allowed-least-load", "llumnix"])
def test_cached_runs_get_the_reference_loops_records_and_leave_no_block_held(
    monkeypatch, mooncake_slice, router
) -> None:
    """Decode runs carried past arrivals give the reference loop's records with the cache on too, under KV
    pressure (a small cache, preemptions), and at the end every block is free and no hash has a holder."""
    from oserve.sim import cluster as sim_cluster

    model = get_model("llama-3.1-8b")
    cluster = parse_cluster("1x2xH100")
    dep = Deployment.homogeneous(model.name, cluster, make_replica(gpu_memory_utilization=0.7), 2)
    sims = []
    real_run = sim_cluster._Sim.run

    def run(self):
        sims.append(self)
        real_run(self)

    monkeypatch.setattr(sim_cluster._Sim, "run", run)
    chained = simulate(mooncake_slice, dep, model, cluster, router=router)
    monkeypatch.setattr(sim_cluster._Sim, "chain_runs", False)
    reference = simulate(mooncake_slice, dep, model, cluster, router=router)
    pd.testing.assert_frame_equal(chained.records, reference.records, check_exact=True)
    assert chained.summary["prefix_hit_rate"] > 0 and chained.summary["preemptions"] > 0
    for sim in sims:
        for eng in sim.engines:
            assert eng.free_blocks == eng.total_blocks and not eng.cache.ref
            assert eng.cache.free_blocks <= eng.total_blocks

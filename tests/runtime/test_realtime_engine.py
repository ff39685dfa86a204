"""``Engine.abort`` and ``RealtimeEngine``'s bookkeeping: aborted requests free their blocks and ids, finished
ones too, and the outstanding-token count stays consistent."""

from __future__ import annotations

import asyncio

import numpy as np
from rt_servers import async_test

from factories import make_model, make_replica
from oserve.perf import CostModel
from oserve.runtime.engine.realtime import RealtimeEngine
from oserve.sim import Engine, Requests, StepTimer
from oserve.spec import get_model


def test_abort_frees_a_running_and_a_waiting_request():
    req = Requests.of(np.array([100, 100, 100]), np.array([50, 50, 50]))
    eng = Engine(
        StepTimer(CostModel(make_model(), make_replica())),
        req,
        kv_blocks=1000,
        block_size=16,
        max_num_seqs=2,
        max_num_batched_tokens=8192,
    )
    for rid in range(3):
        eng.add(rid)
    eng.step(0.0, 0.0)
    assert eng.n_live == 2 and list(eng.waiting) == [2]
    assert eng.abort(2) and not eng.waiting
    assert eng.abort(0) and eng.n_live == 1
    assert not eng.abort(0)
    slot = int(np.flatnonzero(eng.live)[0])
    assert eng.free_blocks == 1000 - eng.blk[slot]
    assert eng.outstanding == req.goal[1] - eng.comp[slot]


@async_test
async def test_request_ids_are_recycled_and_counts_exact():
    engine = RealtimeEngine(get_model("llama-2-7b"), make_replica(), speed=200.0)
    engine.start()
    try:
        for _ in range(3):
            gens = [engine.submit(50, n) for n in (1, 5, 9)]
            for g in gens:
                got = 0
                while got < g.output_tokens:
                    got += await g.tokens.get()
                assert got == g.output_tokens
            await asyncio.sleep(0.01)
        aborted = engine.submit(50, 2000)
        await aborted.tokens.get()
        engine.abort(aborted)
        await asyncio.sleep(0.01)
    finally:
        await engine.stop()
    assert len(engine.req.prompt) <= 4  # three at a time, then one more
    assert engine.num_in_flight == 0 and engine.kv_usage == 0.0
    assert all(e.outstanding == 0 for e in engine.engines)


@async_test
async def test_pp_virtual_engines_share_the_stages():
    """A PP2 emulated replica runs its two virtual engines through one pipeline, as the simulator does: a long
    prompt and a short request on the two engines both book the same stages, and each returns its tokens."""
    engine = RealtimeEngine(get_model("llama-2-7b"), make_replica(pp=2), speed=100.0)
    pipeline = engine.engines[0].pipeline
    assert pipeline is not None and all(e.pipeline is pipeline for e in engine.engines)
    engine.start()
    try:
        gens = [engine.submit(3000, 2), engine.submit(20, 4)]
        for g in gens:
            got = 0
            while got < g.output_tokens:
                got += await g.tokens.get()
            assert got == g.output_tokens
    finally:
        await engine.stop()
    assert pipeline.prefill_until_s > 0 and min(pipeline.free_s) > 0
    assert all(e.steps > 0 for e in engine.engines)  # the requests went to both virtual engines


@async_test
async def test_a_request_with_remote_kv_is_adopted_without_its_prefill():
    async def busy_s(remote: bool) -> float:
        engine = RealtimeEngine(get_model("llama-2-7b"), make_replica(), speed=200.0)
        engine.start()
        try:
            gen = engine.submit(3000, 2, remote_kv=remote)
            got = 0
            while got < 2:
                got += await gen.tokens.get()
        finally:
            await engine.stop()
        assert engine.recomputed == 0 and engine.num_in_flight == 0 and engine.kv_usage == 0.0
        return sum(e.busy_s for e in engine.engines)  # virtual seconds the engine computed

    local, remote = await busy_s(False), await busy_s(True)
    # the same 2 tokens: the remote request runs two decode-sized steps, the local one a 3000-token prefill first
    assert remote < 0.3 * local, (remote, local)

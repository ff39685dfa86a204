"""The gateway's parts without HTTP: online typing against ``LiveClassifier``, the route table's accounting, and
a SIGTERM drain of ``serve_gateway``."""

from __future__ import annotations

import asyncio
import os
import signal

import aiohttp
import numpy as np
import pytest
from rt_servers import async_test, content_of, deployment, engine_app, free_port, read_sse, serving

from oserve.runtime.gateway import Gateway, make_gateway_app, serve_gateway
from oserve.runtime.gateway.classify import OnlineClassifier
from oserve.trace.classify import LiveClassifier, TypeGrid


@pytest.mark.parametrize("grid", [TypeGrid(), TypeGrid((100, 1000), (50, 400)), TypeGrid((7,), ())])
def test_online_classifier_agrees_with_live_classifier(grid):
    rng = np.random.default_rng(0)
    live = LiveClassifier(grid, tuple(rng.uniform(10, 600, grid.num_prompt_bins)))
    online = OnlineClassifier(grid, live)
    prompts = rng.integers(1, 3000, 500)
    caps = [None if c == 0 else int(c) for c in rng.integers(0, 800, 500)]
    for p, cap in zip(prompts.tolist(), caps, strict=True):
        expect_type = int(live.classify(p, cap)[0])
        expect_est = float(live.estimate_output_tokens(p, cap)[0])
        assert online.classify(p, cap) == (expect_type, expect_est)


def test_online_estimate_learns_the_median_output_per_prompt_bin():
    grid = TypeGrid((100,), (50,))
    online = OnlineClassifier(grid, refit_every=10)
    assert online.classify(10, None) == (1, 256.0)  # the default estimate is long
    for _ in range(10):
        online.observe(10, 20)
    assert online.classify(10, None) == (0, 20.0)  # short prompts turned out to have short outputs
    assert online.classify(500, None) == (3, 256.0)  # the other bin is unchanged


def test_route_table_tracks_load_across_a_switch():
    gw = Gateway(deployment(["a", "b"]), {"a": "http://a", "b": "http://b"})
    table = gw.table
    i = table.pick(0, 100.0, set())
    load = table.loads[i]
    table.started(load, 100.0)
    assert table.view.running[i] == 1 and table.view.outstanding_tokens[i] == 100.0
    assert table.pick(0, 100.0, set()) != i  # least outstanding tokens
    assert table.pick(0, 100.0, {1 - i}) == i  # excluded replicas are skipped
    gw.set_routes(deployment([load.name]), {load.name: "http://x"})
    assert gw.table.view.running[0] == 1  # the new table starts from the live load
    gw.table.finished(load, 100.0)
    assert gw.inflight(load.name) == 0 and gw.table.view.outstanding_tokens[0] == 0.0


@async_test
async def test_serve_gateway_drains_on_sigterm():
    async with serving(engine_app(speed=4.0)) as replica:
        port = free_port()
        gw = Gateway(deployment(["r0"]), {"r0": replica})
        up = asyncio.Event()
        server = asyncio.create_task(serve_gateway(make_gateway_app(gw), "127.0.0.1", port, ready=up.set))
        await asyncio.wait_for(up.wait(), 10)
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            body = {"prompt": "x", "max_tokens": 40, "stream": True}
            async with http.post(f"{url}/v1/completions", json=body) as resp:
                first = await resp.content.readline()
                os.kill(os.getpid(), signal.SIGTERM)
                await asyncio.sleep(0.05)
                assert gw.draining
                with pytest.raises(aiohttp.ClientConnectionError):  # the listening socket is closed
                    async with aiohttp.ClientSession() as other:
                        await other.get(f"{url}/health")
                events = await read_sse(resp)
        await asyncio.wait_for(server, 10)
    assert first.startswith(b"data: ") and len(content_of(events)) == 39 and events[-1] == "[DONE]"

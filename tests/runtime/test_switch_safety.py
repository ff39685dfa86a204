"""Switches that cannot leave the service down, with real engine processes behind a real gateway on loopback: a
target that cannot start is refused before anything stops, a start that fails rolls back to the previous
deployment while the gateway holds the requests of the gap, and ``/health`` says degraded when it is."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import pytest
from rt_servers import async_test, deployment, engine_app, free_port, serving

from oserve.errors import BackendError, ConfigError
from oserve.runtime.engine.launch import EmulatedBackend, EngineLaunch
from oserve.runtime.gateway import Gateway, GatewayLimits, make_gateway_app
from oserve.runtime.orchestrator import LocalOrchestrator
from oserve.spec import Deployment, Replica, ReplicaConfig, get_gpu, get_model, parse_cluster

H100 = get_gpu("H100")


class FailingBackend(EmulatedBackend):
    """The emulated engine, except that replicas named ``bad*`` exit at once (an engine that cannot start)."""

    __slots__ = ()

    def launch(self, replica: Replica, *, port: int, host: str, device_ids: Sequence[int]) -> EngineLaunch:
        if replica.name.startswith("bad"):
            return EngineLaunch((sys.executable, "-c", "import sys; print('no'); sys.exit(3)"))
        return EmulatedBackend.launch(self, replica, port=port, host=host, device_ids=device_ids)


def _dep(*shapes: tuple[str, int, tuple[int, ...]], model: str = "llama-3-8b") -> Deployment:
    return Deployment(model, tuple(Replica(ReplicaConfig(H100, tp=tp), g, n) for n, tp, g in shapes))


def test_a_replica_that_cannot_fit_is_refused_before_anything_stops(tmp_path: Path):
    model = get_model("llama-2-70b")
    orch = LocalOrchestrator(
        EmulatedBackend(model.name, speed=20),
        model=model,
        cluster=parse_cluster("1x4xH100"),
        log_dir=tmp_path,
    )
    running = _dep(("big", 4, (0, 1, 2, 3)), model=model.name)

    async def scenario() -> None:
        await orch.apply(running)
        try:
            with pytest.raises(ConfigError, match=r"replica s0 \(H100-SXM-80GB:tp1\) cannot start"):
                await orch.apply(_dep(*((f"s{i}", 1, (i,)) for i in range(4)), model=model.name))
            assert orch.current() == running and await orch.dead() == []
        finally:
            await orch.shutdown()

    asyncio.run(scenario())


@async_test
async def test_a_failed_start_rolls_back_and_the_gap_holds_requests(tmp_path: Path):
    """2 x TP1 -> one TP2 on the same GPUs: both stop (a gap), the TP2 engine dies at start, both come back; the
    requests sent all along are held through the gaps and every one completes."""
    orch = LocalOrchestrator(
        FailingBackend("llama-3-8b", speed=20),
        model=get_model("llama-3-8b"),
        cluster=parse_cluster("1x2xH100"),
        log_dir=tmp_path,
    )
    previous = _dep(("r0", 1, (0,)), ("r1", 1, (1,)))
    await orch.apply(previous)
    async with AsyncExitStack() as stack:
        stack.push_async_callback(orch.shutdown)
        gw = Gateway(orch.current(), orch.endpoints(), limits=GatewayLimits(hold_timeout_s=60))
        gw.plan_state = lambda: (orch.planned, orch.switching)
        orch.attach(gw)
        url = await stack.enter_async_context(serving(make_gateway_app(gw)))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        stop = asyncio.Event()
        statuses: list[int] = []

        async def client() -> None:
            while not stop.is_set():
                async with http.post(f"{url}/v1/completions", json={"prompt": "x", "max_tokens": 4}) as r:
                    await r.read()
                    statuses.append(r.status)

        clients = [asyncio.create_task(client()) for _ in range(4)]
        with pytest.raises(BackendError, match="rolled back to 2 x H100-SXM-80GB:tp1"):
            await orch.apply(_dep(("bad", 2, (0, 1))))
        await asyncio.sleep(0.2)
        stop.set()
        await asyncio.gather(*clients)
        assert orch.current() == previous and orch.planned == previous and await orch.dead() == []
        assert statuses and set(statuses) == {200}, statuses
        async with http.get(f"{url}/health") as r:
            assert r.status == 200 and (await r.json())["status"] == "ok"


@async_test
async def test_health_is_degraded_when_routed_capacity_is_below_plan_or_zero():
    async with AsyncExitStack() as stack:
        live = await stack.enter_async_context(serving(engine_app()))
        endpoints = {"live": live, "dead": f"http://127.0.0.1:{free_port()}"}
        limits = GatewayLimits(probe_interval_s=0.05, probe_timeout_s=0.5, hold_timeout_s=0.0)
        gw = Gateway(deployment(["live", "dead"]), endpoints, limits=limits)
        url = await stack.enter_async_context(serving(make_gateway_app(gw)))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        body: dict = {}
        for _ in range(200):  # until the prober has found the dead replica
            async with http.get(f"{url}/health") as r:
                body = await r.json()
                if r.status == 503:
                    break
            await asyncio.sleep(0.05)
        assert body["status"] == "degraded" and body["down"] == ["dead"], body
        assert "1 of 2 planned GPUs" in body["reason"]
        # a switch's gap: nothing routed
        gw.pause("switching")
        async with http.get(f"{url}/health") as r:
            body = await r.json()
            assert r.status == 503 and "no replica routed" in body["reason"]
        async with http.post(f"{url}/v1/completions", json={"prompt": "x", "max_tokens": 2}) as r:
            assert r.status == 503  # held for hold_timeout_s (0 here), then refused
        gw.set_routes(deployment(["live"]), {"live": live})
        async with http.get(f"{url}/health") as r:
            assert r.status == 200 and (await r.json())["status"] == "ok"


def test_a_switch_whose_caller_leaves_still_completes(tmp_path: Path):
    from serving import ADMIN, ServerThread, serve_config

    served = ServerThread(serve_config(tmp_path, cluster="1x1xH100", rates="512:128=2"))
    try:
        target = {
            "model": "llama-3-8b",
            "replicas": [{"name": "n0", "gpu": "H100", "gpus": [0], "max_num_seqs": 64}],
        }

        async def post_and_leave() -> None:
            timeout = aiohttp.ClientTimeout(total=0.3)
            async with aiohttp.ClientSession(timeout=timeout) as http:
                with pytest.raises(TimeoutError):
                    await http.post(f"{served.url}/admin/deployment", json=target, headers=ADMIN)

        asyncio.run(post_and_leave())
        for _ in range(600):  # the switch goes on without its caller
            current = served.server.orchestrator.current()
            if current is not None and current.replicas[0].config.max_num_seqs == 64:
                break
            asyncio.run(asyncio.sleep(0.1))
        assert served.server.orchestrator.current().replicas[0].config.max_num_seqs == 64
    finally:
        served.close()


@async_test
async def test_a_request_refused_by_a_stopping_engine_retries_on_its_successor_of_the_same_name():
    """A gap switch that replaces ``r0`` by a new ``r0`` (the only replica, before and after): a request the old
    engine refuses with 503 as it stops is retried on the new engine, though it bears the name already tried."""
    from aiohttp import web

    async def stopping(request: web.Request) -> web.Response:  # the old engine, stopping: 503 a moment later
        await request.read()
        await asyncio.sleep(0.3)
        return web.json_response({"error": {"message": "the engine is shutting down"}}, status=503)

    old = web.Application()
    old.router.add_post("/v1/completions", stopping)

    async def health(_request: web.Request) -> web.Response:
        return web.Response(status=503)

    old.router.add_get("/health", health)
    async with AsyncExitStack() as stack:
        old_url = await stack.enter_async_context(serving(old))
        new_url = await stack.enter_async_context(serving(engine_app()))
        gw = Gateway(deployment(["r0"]), {"r0": old_url}, limits=GatewayLimits(hold_timeout_s=5.0))
        url = await stack.enter_async_context(serving(make_gateway_app(gw)))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        sent = asyncio.create_task(http.post(f"{url}/v1/completions", json={"prompt": "x", "max_tokens": 2}))
        await asyncio.sleep(0.1)  # the request is on the old engine
        gw.pause("switching")
        gw.set_routes(deployment(["r0"]), {"r0": new_url})  # the new r0, before the old one answers
        async with await sent as r:
            assert r.status == 200, await r.text()
            assert r.headers["X-OServe-Replica"] == "r0"

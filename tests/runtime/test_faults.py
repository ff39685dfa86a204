"""Replica faults with real engine processes behind a real gateway on loopback: a replica that stops answering
(SIGSTOP) is found by the probe and its requests retried elsewhere, a killed one's (SIGKILL) non-streamed
requests are retried and its streams end with an OpenAI error event, and a client that leaves aborts its
request on the engine too."""

from __future__ import annotations

import asyncio
import os
import signal
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
from rt_servers import MODEL, async_test, deployment, engine_app, free_port, metric_value, read_sse, serving

from oserve.runtime.engine.launch import EmulatedBackend
from oserve.runtime.engine.process import EngineProcess
from oserve.runtime.engine.vllm import wait_healthy
from oserve.runtime.gateway import Gateway, GatewayLimits, make_gateway_app
from oserve.spec import Replica, ReplicaConfig, get_gpu

FAST_PROBE = GatewayLimits(probe_interval_s=0.1, probe_timeout_s=0.3, hold_timeout_s=10.0)


async def _engines(stack: AsyncExitStack, names: list[str], tmp: Path, speed: float) -> dict[str, tuple]:
    """``oserve engine`` processes on free loopback ports: name -> (url, EngineProcess)."""
    backend = EmulatedBackend(MODEL, speed=speed)
    out = {}
    for name in names:
        port = free_port()
        launch = backend.launch(
            Replica(ReplicaConfig(get_gpu("H100")), (0,), name), port=port, host="127.0.0.1", device_ids=[0]
        )
        proc = EngineProcess(launch, tmp / f"{name}.log")
        stack.callback(proc.kill)
        out[name] = (f"http://127.0.0.1:{port}", proc)
    for url, proc in out.values():
        await wait_healthy(url, timeout_s=60, alive=proc.alive, describe=proc.log_tail)
    return out


async def _complete(http: aiohttp.ClientSession, url: str, tokens: int) -> tuple[int, dict]:
    async with http.post(f"{url}/v1/completions", json={"prompt": "x" * 64, "max_tokens": tokens}) as r:
        return r.status, await r.json()


async def _stream(http: aiohttp.ClientSession, url: str, tokens: int) -> list:
    body = {"prompt": "x" * 64, "max_tokens": tokens, "stream": True}
    async with http.post(f"{url}/v1/completions", json=body) as r:
        assert r.status == 200
        return await read_sse(r)


def _stream_ok_or_clean_error(events: list, tokens: int) -> bool:
    """True for a complete stream; an interrupted one must end with an error event and [DONE]."""
    assert events[-1] == "[DONE]", events[-3:]
    chunks = [e for e in events[:-1] if isinstance(e, dict) and "choices" in e]
    if len(chunks) == tokens:
        return True
    assert events[-2]["error"]["code"] == "upstream_disconnected", events[-2]
    return False


async def _fault_under_load(tmp_path: Path, sig: signal.Signals) -> tuple[list, list, Gateway, str]:
    async with AsyncExitStack() as stack:
        engines = await _engines(stack, ["a", "b"], tmp_path, speed=2.0)
        gw = Gateway(deployment(["a", "b"]), {n: u for n, (u, _) in engines.items()}, limits=FAST_PROBE)
        url = await stack.enter_async_context(serving(make_gateway_app(gw)))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        plain = [asyncio.create_task(_complete(http, url, 400)) for _ in range(8)]
        streams = [asyncio.create_task(_stream(http, url, 400)) for _ in range(4)]
        while gw.inflight("a") < 3:  # the victim holds requests of both kinds
            await asyncio.sleep(0.02)
        victim = engines["a"][1]
        os.kill(victim.pid, sig)
        try:
            done = await asyncio.gather(*plain)
            events = await asyncio.gather(*streams)
            after = await asyncio.gather(*(_complete(http, url, 4) for _ in range(4)))
            metrics = await (await http.get(f"{url}/metrics")).text()
        finally:
            if sig == signal.SIGSTOP:
                os.kill(victim.pid, signal.SIGCONT)
        return done + after, events, gw, metrics


@async_test
async def test_a_hung_replica_is_found_and_its_requests_retried(tmp_path: Path):
    done, events, gw, metrics = await _fault_under_load(tmp_path, signal.SIGSTOP)
    assert [s for s, _ in done] == [200] * 12 and all(
        b["usage"]["completion_tokens"] in (400, 4) for _, b in done
    )
    for e in events:
        _stream_ok_or_clean_error(e, 400)
    assert gw.inflight("a") == 0 and metric_value(metrics, "oserve_gateway_retries_total", reason="hung") >= 1


@async_test
async def test_a_killed_replica_loses_no_plain_request_and_ends_its_streams_cleanly(tmp_path: Path):
    done, events, gw, _ = await _fault_under_load(tmp_path, signal.SIGKILL)
    assert [s for s, _ in done] == [200] * 12
    broken = [not _stream_ok_or_clean_error(e, 400) for e in events]
    assert gw.inflight("a") == 0 and len(broken) == 4


async def _running(http: aiohttp.ClientSession, engine: str) -> float:
    async with http.get(f"{engine}/metrics") as r:
        return metric_value(await r.text(), "vllm:num_requests_running")


@async_test
async def test_a_client_that_leaves_aborts_its_request_on_the_engine():
    async with AsyncExitStack() as stack:
        engine = await stack.enter_async_context(serving(engine_app(speed=1.0)))
        gw = Gateway(deployment(["r0"]), {"r0": engine})
        url = await stack.enter_async_context(serving(make_gateway_app(gw)))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        for stream in (False, True):
            body = {"prompt": "x", "max_tokens": 3000, "stream": stream}  # ~20 s at real time
            leaving = aiohttp.ClientSession()
            task = asyncio.create_task(leaving.post(f"{url}/v1/completions", json=body))
            while await _running(http, engine) < 1:
                await asyncio.sleep(0.02)
            if stream:
                await (await task).content.readany()
            task.cancel()
            await leaving.close()
            for _ in range(500):
                if await _running(http, engine) == 0 and gw.inflight("r0") == 0:
                    break
                await asyncio.sleep(0.02)
            assert await _running(http, engine) == 0 and gw.inflight("r0") == 0, f"stream={stream}"

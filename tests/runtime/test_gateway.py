"""The gateway over real loopback HTTP in front of emulated replicas: routing by the plan's weights, retries,
backpressure, OpenAI error bodies, streaming passthrough, a replica killed mid-stream, switches and metrics."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from rt_servers import (
    MODEL,
    async_test,
    content_of,
    deployment,
    engine_app,
    free_port,
    metric_value,
    read_sse,
    serving,
)

from oserve.runtime.engine.emulated import text_of
from oserve.runtime.gateway import Gateway, GatewayLimits, make_gateway_app
from oserve.trace.classify import TypeGrid

SRC = Path(__file__).resolve().parents[2] / "src"
SHORT, LONG = "p<100,o:any", "p>=100,o:any"  # the types of a grid cut at 100 prompt tokens


async def _stack(stack: AsyncExitStack, names: list[str], speed: float = 50.0, **gateway_kw):
    """Emulated replicas ``names`` behind a gateway; returns (gateway URL, replica URLs, Gateway)."""
    urls = {n: await stack.enter_async_context(serving(engine_app(speed))) for n in names}
    dep = gateway_kw.pop("dep", None) or deployment(names)
    gw = Gateway(dep, urls, **gateway_kw)
    url = await stack.enter_async_context(serving(make_gateway_app(gw)))
    return url, urls, gw


async def _metrics(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(f"{url}/metrics") as resp:
        return await resp.text()


@async_test
async def test_completion_and_chat_pass_through_with_exact_tokens():
    async with AsyncExitStack() as stack:
        url, _, _ = await _stack(stack, ["r0", "r1"])
        http = await stack.enter_async_context(aiohttp.ClientSession())
        async with http.post(
            f"{url}/v1/completions", json={"model": MODEL, "prompt": "x" * 40, "max_tokens": 9}
        ) as r:
            assert r.status == 200
            body = await r.json()
        assert body["usage"] == {"prompt_tokens": 10, "completion_tokens": 9, "total_tokens": 19}
        chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "stream": True}
        async with http.post(f"{url}/v1/chat/completions", json=chat) as r:
            assert r.headers["Content-Type"].startswith("text/event-stream")
            events = await read_sse(r)
        assert "".join(content_of(events)) == text_of(0, 5) and events[-1] == "[DONE]"
        async with http.get(f"{url}/v1/models") as r:
            assert [m["id"] for m in (await r.json())["data"]] == [MODEL]
        async with http.get(f"{url}/health") as r:
            assert r.status == 200


@async_test
async def test_routes_each_type_to_the_replicas_its_weights_allow():
    weights = {SHORT: {"r0": 1.0}, LONG: {"r1": 0.5, "r2": 0.5}}
    dep = deployment(["r0", "r1", "r2"], weights, prompt_edges=[100])
    async with AsyncExitStack() as stack:
        url, urls, gw = await _stack(stack, ["r0", "r1", "r2"], dep=dep)
        http = await stack.enter_async_context(aiohttp.ClientSession())

        async def send(chars: int) -> int:
            body = {"prompt": "x" * chars, "max_tokens": 20}
            async with http.post(f"{url}/v1/completions", json=body) as r:
                return r.status

        statuses = await asyncio.gather(*[send(40) for _ in range(12)], *[send(2000) for _ in range(12)])
        assert statuses == [200] * 24
        served = {
            n: metric_value(await _metrics(http, u), "vllm:request_success_total") for n, u in urls.items()
        }
        assert served["r0"] == 12 and served["r1"] + served["r2"] == 12
        assert served["r1"] > 0 and served["r2"] > 0  # least outstanding tokens spreads the long ones
        assert gw.observed_counts() == {SHORT: 12, LONG: 12}
        assert all(gw.inflight(n) == 0 for n in urls)
        text = await _metrics(http, url)
    assert metric_value(text, "oserve_gateway_arrivals_total", type=SHORT) == 12
    assert metric_value(text, "oserve_gateway_e2e_seconds_count", type=LONG) == 12


@async_test
async def test_a_dead_replica_is_retried_elsewhere_and_skipped_for_a_while():
    async with AsyncExitStack() as stack:
        live = await stack.enter_async_context(serving(engine_app()))
        endpoints = {"dead": f"http://127.0.0.1:{free_port()}", "live": live}
        gw = Gateway(deployment(["dead", "live"]), endpoints)
        url = await stack.enter_async_context(serving(make_gateway_app(gw)))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        for _ in range(6):
            async with http.post(f"{url}/v1/completions", json={"prompt": "x", "max_tokens": 3}) as r:
                assert r.status == 200
                assert (await r.json())["usage"]["completion_tokens"] == 3
        text = await _metrics(http, url)
    assert metric_value(text, "oserve_gateway_retries_total", reason="down") == 1  # then skipped


@async_test
async def test_a_5xx_before_the_first_byte_is_retried():
    async def broken(request: web.Request) -> web.Response:
        return web.json_response({"error": {"message": "boom"}}, status=500)

    bad = web.Application()
    bad.router.add_post("/v1/completions", broken)
    async with AsyncExitStack() as stack:
        live = await stack.enter_async_context(serving(engine_app()))
        bad_url = await stack.enter_async_context(serving(bad))
        gw = Gateway(deployment(["bad", "live"]), {"bad": bad_url, "live": live})
        url = await stack.enter_async_context(serving(make_gateway_app(gw)))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        for _ in range(4):
            async with http.post(f"{url}/v1/completions", json={"prompt": "x", "max_tokens": 2}) as r:
                assert r.status == 200
        assert metric_value(await _metrics(http, url), "oserve_gateway_retries_total", reason="5xx") >= 1
        # with only the broken replica, the client gets a 502 naming it, not the upstream's body
        gw.set_routes(deployment(["bad"]), {"bad": bad_url})
        async with http.post(f"{url}/v1/completions", json={"prompt": "x", "max_tokens": 2}) as r:
            assert r.status == 502
            error = (await r.json())["error"]
    assert error["code"] == "upstream_failed" and "bad: HTTP 500" in error["message"]


@async_test
async def test_backpressure_is_a_429_with_retry_after_when_every_replica_is_full_and_nothing_queues():
    # with no queue (queueing: test_admission.py)
    limits = GatewayLimits(max_inflight_per_replica=2, retry_after_s=3, max_queued=0)
    async with AsyncExitStack() as stack:
        url, _, gw = await _stack(stack, ["r0"], speed=2.0, limits=limits)
        http = await stack.enter_async_context(aiohttp.ClientSession())
        body = {"prompt": "x", "max_tokens": 200, "stream": True}  # ~0.7 s each at speed 2
        held = [await http.post(f"{url}/v1/completions", json=body) for _ in range(2)]
        assert gw.inflight("r0") == 2
        async with http.post(f"{url}/v1/completions", json={"prompt": "x", "max_tokens": 1}) as r:
            assert r.status == 429
            assert 3 <= int(r.headers["Retry-After"]) <= 6  # the base, plus jitter
            assert (await r.json())["error"]["type"] == "rate_limit_error"
        for resp in held:
            assert len(content_of(await read_sse(resp))) == 200
            resp.release()
        async with http.post(f"{url}/v1/completions", json={"prompt": "x", "max_tokens": 1}) as r:
            assert r.status == 200
        assert gw.observed_counts()["p:any,o:any"] == 4


@pytest.mark.parametrize(
    ("path", "raw", "status", "param"),
    [
        ("/v1/completions", b"{oops", 400, None),
        ("/v1/completions", b'"a string"', 400, None),
        ("/v1/completions", b'{"model": "gpt-9", "prompt": "x"}', 404, "model"),
        ("/v1/completions", b'{"prompt": "x", "max_tokens": -1}', 400, "max_tokens"),
        ("/v1/completions", b'{"prompt": "x", "top_p": 0}', 400, "top_p"),
        ("/v1/completions", b'{"prompt": "x", "max_tokens": 99999}', 400, "max_tokens"),  # the replica's 400
        (
            "/v1/chat/completions",
            b'{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}',
            400,
            None,
        ),
        ("/v1/chat/completions", b'{"messages": "hi"}', 400, "messages"),
        ("/v1/completions", b'{"prompt": "' + b"x" * 3000 + b'"}', 413, None),
    ],
)
@async_test
async def test_bad_input_gets_an_openai_4xx_body(path, raw, status, param):
    async with AsyncExitStack() as stack:
        url, _, _ = await _stack(stack, ["r0"], limits=GatewayLimits(max_body_bytes=2048))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        async with http.post(url + path, data=raw, headers={"Content-Type": "application/json"}) as r:
            assert r.status == status
            error = (await r.json())["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param


@async_test
async def test_unknown_paths_and_methods_get_openai_bodies():
    async with AsyncExitStack() as stack:
        url, _, _ = await _stack(stack, ["r0"])
        http = await stack.enter_async_context(aiohttp.ClientSession())
        async with http.get(f"{url}/v1/completions") as r:
            assert r.status == 405 and r.headers["Allow"] == "POST"
            assert "error" in await r.json()
        async with http.post(f"{url}/v2/nothing", data=b"{}") as r:
            assert r.status == 404 and "error" in await r.json()


@async_test
async def test_switch_routes_new_requests_while_old_ones_finish_where_they_are():
    async with AsyncExitStack() as stack:
        url, urls, gw = await _stack(stack, ["a", "b"], speed=4.0, dep=deployment(["a"]))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        body = {"prompt": "x", "max_tokens": 300, "stream": True}  # ~0.5 s at speed 4
        old = await http.post(f"{url}/v1/completions", json=body)
        assert gw.inflight("a") == 1
        gw.set_routes(deployment(["b"]), {"b": urls["b"]})
        async with http.post(f"{url}/v1/completions", json={"prompt": "x", "max_tokens": 2}) as r:
            assert r.status == 200
        assert gw.inflight("a") == 1 and gw.inflight("b") == 0
        assert len(content_of(await read_sse(old))) == 300
        old.release()
        assert gw.inflight("a") == 0 and gw.replicas == ["b"]
        assert metric_value(await _metrics(http, url), "oserve_gateway_switches_total") == 1
        served_b = metric_value(await _metrics(http, urls["b"]), "vllm:request_success_total")
    assert served_b == 1


def test_set_routes_rejects_a_replica_without_endpoint():
    gw = Gateway(deployment(["a"]), {"a": "http://127.0.0.1:1"})
    with pytest.raises(Exception, match="no endpoint"):
        gw.set_routes(deployment(["a", "b"]), {"a": "http://127.0.0.1:1"})
    assert gw.replicas == ["a"]


def test_classifier_grid_comes_from_the_deployment_or_the_argument():
    dep = deployment(["a"], prompt_edges=[100, 1000], output_edges=[50])
    assert Gateway(dep, {"a": "http://x"}).classifier.grid == TypeGrid((100, 1000), (50,))
    assert Gateway(dep, {"a": "http://x"}, grid=TypeGrid((7,))).classifier.grid == TypeGrid((7,))


@async_test
async def test_a_replica_killed_mid_stream_ends_the_stream_with_an_error_event():
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    cmd = [
        sys.executable,
        "-m",
        "oserve.cli.main",
        "engine",
        "--model",
        MODEL,
        "--port",
        str(port),
        "--speed",
        "2",
    ]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    try:
        async with AsyncExitStack() as stack:
            gw = Gateway(deployment(["r0"]), {"r0": f"http://127.0.0.1:{port}"})
            url = await stack.enter_async_context(serving(make_gateway_app(gw)))
            http = await stack.enter_async_context(aiohttp.ClientSession())
            for _ in range(400):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/health") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
            body = {"prompt": "x", "max_tokens": 500, "stream": True}
            async with http.post(f"{url}/v1/completions", json=body) as r:
                assert r.status == 200
                for _ in range(3):
                    await r.content.readline()
                proc.send_signal(signal.SIGKILL)
                events = await read_sse(r)
            text = await _metrics(http, url)
    finally:
        proc.kill()
        proc.wait()
    assert events[-1] == "[DONE]"
    error = events[-2]["error"]
    assert error["code"] == "upstream_disconnected" and "r0" in error["message"]
    assert len(content_of(events)) < 500
    assert metric_value(text, "oserve_gateway_stream_errors_total") == 1
    assert gw.inflight("r0") == 0


@async_test
async def test_a_silent_replica_times_out_and_the_request_goes_elsewhere():
    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response()

    stuck = web.Application()
    stuck.router.add_post("/v1/completions", hang)
    async with AsyncExitStack() as stack:
        live = await stack.enter_async_context(serving(engine_app()))
        stuck_url = await stack.enter_async_context(serving(stuck))
        dep = deployment(["stuck", "live"], {"p:any,o:any": {"stuck": 1.0, "live": 1.0}})
        gw = Gateway(dep, {"stuck": stuck_url, "live": live}, limits=GatewayLimits(read_timeout_s=0.3))
        url = await stack.enter_async_context(serving(make_gateway_app(gw)))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        for _ in range(3):
            async with http.post(f"{url}/v1/completions", json={"prompt": "x", "max_tokens": 2}) as r:
                assert r.status == 200
        assert gw.inflight("stuck") == 0
        assert metric_value(await _metrics(http, url), "oserve_gateway_retries_total", reason="down") == 1


@async_test
async def test_requests_the_engine_rejects_are_not_demand():
    async with AsyncExitStack() as stack:
        url, _, gw = await _stack(stack, ["r0"])
        http = await stack.enter_async_context(aiohttp.ClientSession())
        async with http.post(f"{url}/v1/completions", json={"prompt": "x", "max_tokens": 100000}) as r:
            assert r.status == 400 and (await r.json())["error"]["code"] == "context_length_exceeded"
        assert sum(gw.observed_counts().values()) == 0
        async with http.post(f"{url}/v1/completions", json={"prompt": "x", "max_tokens": 2}) as r:
            assert r.status == 200
        assert sum(gw.observed_counts().values()) == 1

"""Prefill/decode disaggregation live, over real loopback HTTP: the emulated engine in both roles (vLLM's
``kv_transfer_params``, the KV copy priced by the cost model), the gateway's two phases, the route table's
decode pick, and the vLLM launcher's NIXL flags."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack

import aiohttp
import pytest
from rt_servers import MODEL, async_test, content_of, engine_app, metric_value, read_sse, serving

from oserve.runtime.engine.emulated import text_of
from oserve.runtime.engine.kv_handoff import PREFILL_PARAMS, handoff_s, prefill_body
from oserve.runtime.gateway import Gateway, make_gateway_app
from oserve.runtime.gateway.proxy import REPLICA_HEADER
from oserve.spec import Deployment, Replica, ReplicaConfig, get_gpu, get_model

H100 = get_gpu("H100")
SHORT, LONG = "p<100,o:any", "p>=100,o:any"


def pd_deployment(weights: dict | None = None) -> Deployment:
    """a0 aggregated, p0 prefill, d0 decode (one H100 each); short prompts to a0, long ones to the pool."""
    replicas = (
        Replica(ReplicaConfig(H100), (0,), "a0"),
        Replica(ReplicaConfig(H100, role="prefill"), (1,), "p0"),
        Replica(ReplicaConfig(H100, role="decode"), (2,), "d0"),
    )
    weights = weights if weights is not None else {SHORT: {"a0": 1.0}, LONG: {"p0": 1.0}}
    return Deployment(MODEL, replicas, weights, {"prompt_edges": [100]})


async def _metrics(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(f"{url}/metrics") as resp:
        return await resp.text()


@async_test
async def test_emulated_prefill_answers_kv_params_and_decode_skips_the_prefill():
    async with AsyncExitStack() as stack:
        # real time (speed 1): a 3600-token prefill takes the cost model's tens of ms; the KV copy a few ms
        pre = await stack.enter_async_context(serving(engine_app(1.0, role="prefill")))
        dec = await stack.enter_async_context(serving(engine_app(1.0, role="decode")))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        raw = json.dumps({"model": MODEL, "prompt": "x" * 14400, "max_tokens": 4, "stream": True}).encode()
        async with http.post(f"{pre}/v1/completions", data=prefill_body(raw)) as r:
            assert r.status == 200
            body = await r.json()
        assert body["usage"]["completion_tokens"] == 1 and body["usage"]["prompt_tokens"] == 3600
        params = body["kv_transfer_params"]
        assert params["do_remote_prefill"] and not params["do_remote_decode"]
        assert params["tp_size"] == 1 and len(params["remote_block_ids"]) == 225  # 3600 / 16
        # the decode half: the original request (streamed) with those params
        decode = {**json.loads(raw), "kv_transfer_params": params}
        async with http.post(f"{dec}/v1/completions", json=decode) as r:
            events = await read_sse(r)
        assert "".join(content_of(events)) == text_of(0, 4) and events[-1] == "[DONE]"
        # no prefill on the decode side: its first token (on the engine's own clock, so the machine's load and
        # HTTP stay out) comes in a fraction of the prefill's time
        text = await _metrics(http, dec)
        pre_text = await _metrics(http, pre)
        ttft = "vllm:time_to_first_token_seconds_sum"
        assert metric_value(text, ttft) < 0.5 * metric_value(pre_text, ttft), (text, pre_text)
        assert metric_value(text, "oserve:engine_role", role="decode") == 1
        assert metric_value(text, "oserve:kv_transfers_received_total") == 1
        copy_s = handoff_s(get_model(MODEL), ReplicaConfig(H100, role="decode"), 3600, 1)
        assert metric_value(text, "oserve:kv_transfer_seconds_total") == pytest.approx(copy_s)
        assert 1e-3 < copy_s < 0.05  # 3600 tokens x 512 KiB over one 450 GB/s NVLink port
        assert metric_value(await _metrics(http, pre), "oserve:engine_role", role="prefill") == 1


@async_test
async def test_a_plain_request_is_served_whole_by_a_pool_replica():
    async with AsyncExitStack() as stack:
        dec = await stack.enter_async_context(serving(engine_app(50.0, role="decode")))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        async with http.post(f"{dec}/v1/completions", json={"prompt": "hello", "max_tokens": 6}) as r:
            body = await r.json()
        assert body["usage"]["completion_tokens"] == 6 and "kv_transfer_params" not in body
        assert metric_value(await _metrics(http, dec), "oserve:kv_transfers_received_total") == 0


@async_test
async def test_gateway_prefills_on_the_pool_then_decodes_on_the_paired_replica():
    async with AsyncExitStack() as stack:
        roles = {"a0": "aggregated", "p0": "prefill", "d0": "decode"}
        urls = {
            n: await stack.enter_async_context(serving(engine_app(50.0, role=r))) for n, r in roles.items()
        }
        gw = Gateway(pd_deployment(), urls)
        url = await stack.enter_async_context(serving(make_gateway_app(gw)))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        long_prompt = "y" * 2000  # 500 tokens: the pool
        async with http.post(f"{url}/v1/completions", json={"prompt": long_prompt, "max_tokens": 7}) as r:
            assert r.status == 200 and r.headers[REPLICA_HEADER] == "d0"
            body = await r.json()
        assert body["usage"] == {"prompt_tokens": 500, "completion_tokens": 7, "total_tokens": 507}
        chat = {"messages": [{"role": "user", "content": long_prompt}], "max_tokens": 5, "stream": True}
        async with http.post(f"{url}/v1/chat/completions", json=chat) as r:
            assert r.headers[REPLICA_HEADER] == "d0"
            events = await read_sse(r)
        assert "".join(content_of(events)) == text_of(0, 5) and events[-1] == "[DONE]"
        async with http.post(f"{url}/v1/completions", json={"prompt": "short", "max_tokens": 3}) as r:
            assert r.headers[REPLICA_HEADER] == "a0"
        # the prefill replica produced one token per pool request; the decode replica got both KV copies
        p0, d0, a0 = [await _metrics(http, urls[n]) for n in ("p0", "d0", "a0")]
        assert metric_value(p0, "vllm:generation_tokens_total") == 2
        assert metric_value(d0, "oserve:kv_transfers_received_total") == 2
        assert metric_value(d0, "vllm:generation_tokens_total") == 12
        assert metric_value(a0, "vllm:generation_tokens_total") == 3
        assert metric_value(await _metrics(http, url), "oserve_gateway_kv_handoffs_total") == 2
        assert gw.inflight("p0") == gw.inflight("d0") == 0


@async_test
async def test_a_pool_whose_decode_replica_is_down_retries_and_never_routes_decode_first():
    async with AsyncExitStack() as stack:
        urls = {
            n: await stack.enter_async_context(serving(engine_app(50.0, role=r)))
            for n, r in (("a0", "aggregated"), ("p0", "prefill"))
        }
        urls["d0"] = "http://127.0.0.1:9"  # nothing listens: the decode phase fails to connect
        gw = Gateway(pd_deployment({LONG: {"p0": 1.0}, SHORT: {"a0": 1.0}}), urls)
        url = await stack.enter_async_context(serving(make_gateway_app(gw)))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        async with http.post(f"{url}/v1/completions", json={"prompt": "z" * 2000, "max_tokens": 4}) as r:
            # d0 refused: marked down, the request retried; p0 with no decode replica serves it whole
            assert r.status == 200 and r.headers[REPLICA_HEADER] == "p0"
            assert (await r.json())["usage"]["completion_tokens"] == 4
        assert gw.table.pick_decode(set()) == -1  # d0 is in its cooldown


def test_route_table_never_lets_the_router_pick_a_decode_replica():
    dep = pd_deployment({LONG: {"p0": 1.0, "d0": 1.0}})  # a row naming d0 too: the router still skips it
    gw = Gateway(dep, {"a0": "http://a", "p0": "http://p", "d0": "http://d"})
    table = gw.table
    assert table.roles == ["aggregated", "prefill", "decode"] and table.decoders == [2]
    picks = {table.pick(t, 100, set()) for t in range(2) for _ in range(20)}
    assert 2 not in picks
    assert table.pick_decode(set()) == 2 and table.pick_decode({2}) == -1


def test_prefill_body_asks_one_token_unstreamed_for_a_remote_decode():
    raw = json.dumps(
        {"prompt": "a", "max_tokens": 50, "stream": True, "stream_options": {"include_usage": True}}
    )
    body = json.loads(prefill_body(raw.encode()))
    assert body["max_tokens"] == 1 and body["stream"] is False and "stream_options" not in body
    assert body["kv_transfer_params"] == PREFILL_PARAMS


def test_half_a_pool_routes_as_aggregated_during_a_switch():
    from oserve.adapt.waves import routing_deployment

    target = pd_deployment()
    current = Deployment(MODEL, (Replica(ReplicaConfig(H100), (0,), "a0"),))
    up = [target.replicas[0], target.replicas[1]]  # a0 and p0 routed; d0 not started yet
    dep = routing_deployment(target, current, up)
    assert [r.config.role for r in dep.replicas] == ["aggregated", "aggregated"]
    assert [r.name for r in dep.replicas] == ["a0", "p0"]


@async_test
async def test_a_failing_prefill_replica_is_retried_on_another_and_a_4xx_reaches_the_client():
    from aiohttp import web

    async def broken(request: web.Request) -> web.Response:
        return web.json_response({"error": {"message": "boom"}}, status=500)

    bad = web.Application()
    bad.router.add_post("/v1/completions", broken)
    replicas = (
        Replica(ReplicaConfig(H100, role="prefill"), (0,), "p0"),
        Replica(ReplicaConfig(H100, role="prefill"), (1,), "p1"),
        Replica(ReplicaConfig(H100, role="decode"), (2,), "d0"),
    )
    async with AsyncExitStack() as stack:
        urls = {"p0": await stack.enter_async_context(serving(bad))}
        urls["p1"] = await stack.enter_async_context(serving(engine_app(50.0, role="prefill")))
        urls["d0"] = await stack.enter_async_context(serving(engine_app(50.0, role="decode")))
        gw = Gateway(Deployment(MODEL, replicas), urls)
        url = await stack.enter_async_context(serving(make_gateway_app(gw)))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        for _ in range(4):
            async with http.post(f"{url}/v1/completions", json={"prompt": "w" * 400, "max_tokens": 3}) as r:
                assert r.status == 200 and r.headers[REPLICA_HEADER] == "d0"
        gateway_metrics = await _metrics(http, url)
        assert metric_value(gateway_metrics, "oserve_gateway_retries_total", reason="5xx") >= 1
        assert metric_value(gateway_metrics, "oserve_gateway_kv_handoffs_total") == 4
        # a prompt past the context: the prefill replica's 400 is the client's answer, nothing decoded
        too_long = {"prompt": "w" * 20000, "max_tokens": 3}
        async with http.post(f"{url}/v1/completions", json=too_long) as r:
            assert r.status == 400 and r.headers[REPLICA_HEADER] == "p1"
            assert (await r.json())["error"]["code"] == "context_length_exceeded"
        assert metric_value(await _metrics(http, urls["d0"]), "oserve:kv_transfers_received_total") == 4


@async_test
async def test_the_decode_replica_is_held_while_the_prefill_runs():
    import asyncio

    async with AsyncExitStack() as stack:
        # real time: a 3600-token prefill takes ~0.25 s, long enough to look at the gateway's counts meanwhile
        urls = {
            "p0": await stack.enter_async_context(serving(engine_app(1.0, role="prefill"))),
            "d0": await stack.enter_async_context(serving(engine_app(1.0, role="decode"))),
        }
        replicas = (
            Replica(ReplicaConfig(H100, role="prefill"), (0,), "p0"),
            Replica(ReplicaConfig(H100, role="decode"), (1,), "d0"),
        )
        gw = Gateway(Deployment(MODEL, replicas), urls)
        url = await stack.enter_async_context(serving(make_gateway_app(gw)))
        http = await stack.enter_async_context(aiohttp.ClientSession())

        async def one() -> int:
            async with http.post(f"{url}/v1/completions", json={"prompt": "v" * 14400, "max_tokens": 2}) as r:
                return r.status

        task = asyncio.create_task(one())
        for _ in range(400):
            if gw.inflight("p0"):
                break
            await asyncio.sleep(0.002)
        # prefilling: the decode replica already counts it (a drain of d0 would wait for it)
        assert gw.inflight("p0") == 1 and gw.inflight("d0") == 1
        assert await task == 200
        assert gw.inflight("p0") == gw.inflight("d0") == 0

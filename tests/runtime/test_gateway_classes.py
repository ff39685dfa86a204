"""SLO classes on live traffic: the gateway tags each request with its class (the ``x-oserve-class`` header, else
``metadata.oserve_class``, else the prompt rules, else the default) and counts arrivals and completions per class
over real loopback HTTP in front of emulated replicas."""

from __future__ import annotations

from contextlib import AsyncExitStack

import aiohttp
import pytest
from rt_servers import MODEL, async_test, deployment, engine_app, metric_value, serving

from oserve.errors import GatewayError
from oserve.planner import Slo
from oserve.planner.slo_classes import parse_slo_classes
from oserve.runtime.api import parse_request
from oserve.runtime.gateway import Gateway, make_gateway_app

CLASSES = parse_slo_classes(
    "ttft=30,tpot=5;interactive:ttft=30,tpot=5;batch:prompt>=200:e2e=0.000001", Slo(2, 0.2)
)


@async_test
async def test_the_gateway_counts_requests_per_class_and_their_slo():
    async with AsyncExitStack() as stack:
        urls = {n: await stack.enter_async_context(serving(engine_app(50.0))) for n in ("r0", "r1")}
        gw = Gateway(deployment(["r0", "r1"]), urls, classes=CLASSES)
        url = await stack.enter_async_context(serving(make_gateway_app(gw)))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        short, long = "x" * 40, "x" * 4000  # about 10 and 1,000 prompt tokens

        async def send(prompt: str, headers=None, **body) -> None:
            payload = {"model": MODEL, "prompt": prompt, "max_tokens": 3, **body}
            async with http.post(f"{url}/v1/completions", json=payload, headers=headers or {}) as r:
                assert r.status == 200, await r.text()

        await send(short, {"x-oserve-class": "interactive"})  # the header names it
        await send(long, metadata={"oserve_class": "interactive"})  # the body's metadata names it
        await send(long)  # the prompt rule: batch
        await send(long, {"x-oserve-class": "nope"})  # an undefined class falls to the rule
        await send(short)  # nothing applies: default
        assert gw.observed_class_counts() == {"default": 1, "interactive": 2, "batch": 2}
        async with http.get(f"{url}/metrics") as resp:
            text = await resp.text()
        assert metric_value(text, "oserve_gateway_class_arrivals_total", slo_class="interactive") == 2
        assert metric_value(text, "oserve_gateway_class_completed_total", slo_class="batch") == 2
        # the batch class's 1 us E2E target is never met; the others' loose targets always are
        assert metric_value(text, "oserve_gateway_class_slo_met_total", slo_class="interactive") == 2
        assert metric_value(text, "oserve_gateway_class_slo_met_total", slo_class="default") == 1
        assert 'oserve_gateway_class_slo_met_total{slo_class="batch"}' not in text


def test_metadata_names_the_class_and_bad_metadata_is_a_400():
    req = parse_request("completions", b'{"prompt": "hi", "metadata": {"oserve_class": "batch"}}')
    assert req.slo_class == "batch"
    with pytest.raises(GatewayError) as info:
        parse_request("completions", b'{"prompt": "hi", "metadata": {"oserve_class": 3}}')
    assert info.value.status == 400 and "metadata" in str(info.value)


def test_serve_plans_the_users_types_and_each_class_against_its_target(tmp_path):
    from serving import serve_config

    from oserve.runtime.serve import Server

    config = serve_config(
        tmp_path,
        rates="300:100=4,1500:100=2,6000:100=1",
        slo="ttft=2,tpot=0.2;rush:prompt>=3000:ttft=0.01,tpot=0.2",
        prompt_edges=[1000, 3000],
        output_edges=[50],
    )
    server = Server(config)  # plans; starts nothing
    assert (server.grid.prompt_edges, server.grid.output_edges) == ((1000, 3000), (50,))
    assert server.initial.type_edges.prompt_edges == (1000, 3000)
    assert server.classes.names == ("default", "rush")
    assert set(server.initial.weights) == {"p<1000,o>=50", "p[1000,3000),o>=50", "p>=3000,o>=50"}
    # the rush class's 10 ms TTFT: nothing meets it
    assert "best-effort: p>=3000,o>=50" in server.planned_note

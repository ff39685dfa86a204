"""The emulated engine's prefix cache over real loopback HTTP: vLLM's counters, in tokens, hand-counted from the
prompt's 16-token (64-character) blocks; and the gateway's prefix-aware routing in front of two replicas."""

from __future__ import annotations

from contextlib import AsyncExitStack

import aiohttp
import pytest
from rt_servers import async_test, deployment, engine_app, serving

from oserve.runtime.gateway import Gateway, make_gateway_app

SHARED = "".join(f"{i:04d}" for i in range(1000))  # 4,000 characters: 1,000 tokens, 62 whole 16-token blocks


def _counter(text: str, name: str) -> float:
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(f"{name}{{"))


async def _complete(http: aiohttp.ClientSession, url: str, prompt: str) -> None:
    async with http.post(f"{url}/v1/completions", json={"prompt": prompt, "max_tokens": 2}) as resp:
        assert resp.status == 200
        await resp.read()


async def _counters(http: aiohttp.ClientSession, url: str) -> tuple[float, float]:
    async with http.get(f"{url}/metrics") as resp:
        text = await resp.text()
    return _counter(text, "vllm:prefix_cache_queries_total"), _counter(text, "vllm:prefix_cache_hits_total")


@async_test
async def test_repeated_and_shared_prefixes_are_counted_in_tokens():
    async with serving(engine_app()) as url, aiohttp.ClientSession() as http:
        await _complete(http, url, SHARED)
        assert await _counters(http, url) == (1000, 0)
        await _complete(http, url, SHARED)  # all 62 whole blocks hit: 992 tokens (the last 8 are computed)
        assert await _counters(http, url) == (2000, 992)
        # the first 2,048 characters (32 blocks) shared, then a different character
        await _complete(http, url, SHARED[:2048] + "#" + SHARED[2049:])
        assert await _counters(http, url) == (3000, 992 + 512)


@async_test
async def test_blocks_after_a_different_start_never_hit():
    async with serving(engine_app()) as url, aiohttp.ClientSession() as http:
        await _complete(http, url, SHARED)
        await _complete(http, url, "#" + SHARED[1:])  # the chain differs from the first block on
        assert await _counters(http, url) == (2000, 0)


@pytest.mark.parametrize("chat", [False, True])
@async_test
async def test_prefix_caching_off_counts_nothing(chat: bool):
    async with serving(engine_app(enable_prefix_caching=False)) as url, aiohttp.ClientSession() as http:
        for _ in range(2):
            if chat:
                body = {"messages": [{"role": "user", "content": SHARED}], "max_tokens": 2}
                async with http.post(f"{url}/v1/chat/completions", json=body) as resp:
                    assert resp.status == 200
            else:
                await _complete(http, url, SHARED)
        assert await _counters(http, url) == (0, 0)


@async_test
async def test_chat_messages_share_a_system_prompt():
    async with serving(engine_app()) as url, aiohttp.ClientSession() as http:
        for question in ("first question", "second question"):
            body = {
                "messages": [{"role": "system", "content": SHARED}, {"role": "user", "content": question}],
                "max_tokens": 2,
            }
            async with http.post(f"{url}/v1/chat/completions", json=body) as resp:
                assert resp.status == 200
        # each prompt: 4 marker tokens + 1,000 system tokens, then 4 + 4 for the question (1,012 tokens); the
        # first 4,032 characters (the system message and the user marker) are the same: 63 whole blocks
        assert await _counters(http, url) == (2 * 1012, 63 * 16)


@pytest.mark.parametrize(("router", "holder_hits"), [("prefix-aware", 992), ("allowed-least-load", 0)])
@async_test
async def test_gateway_routes_a_repeated_prompt_to_the_replica_that_cached_it(router: str, holder_hits: int):
    """A long request holds r0, so the prompt goes to r1; once both are idle the repeat goes back to r1 under
    prefix-aware (and hits there), to r0 (the first of equals) under least load."""
    async with AsyncExitStack() as stack:
        urls = {n: await stack.enter_async_context(serving(engine_app(1.0))) for n in ("r0", "r1")}
        gw = Gateway(deployment(["r0", "r1"]), urls, router=router)
        url = await stack.enter_async_context(serving(make_gateway_app(gw)))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        body = {"prompt": "y" * 40, "max_tokens": 200, "stream": True}
        async with http.post(f"{url}/v1/completions", json=body) as held:
            await held.content.readline()  # r0 is decoding it
            await _complete(http, url, SHARED)
            await held.read()
        await _complete(http, url, SHARED)
        repeat_on_r1 = holder_hits > 0
        assert await _counters(http, urls["r1"]) == (1000 + 1000 * repeat_on_r1, holder_hits)
        assert await _counters(http, urls["r0"]) == (10 + 1000 * (not repeat_on_r1), 0)


@async_test
async def test_a_repeated_prompt_gets_its_first_token_sooner():
    """4,000 prompt tokens at half speed: about 0.2 s of prefill the first time, one 16-token block the second
    (TTFT as the engine's histogram sums it, arrival to first token)."""
    async with serving(engine_app(0.5)) as url, aiohttp.ClientSession() as http:
        sums = [0.0]
        for _ in range(2):
            await _complete(http, url, SHARED * 4)
            async with http.get(f"{url}/metrics") as resp:
                sums.append(_counter(await resp.text(), "vllm:time_to_first_token_seconds_sum"))
        first, second = sums[1] - sums[0], sums[2] - sums[1]
        assert second < 0.5 * first

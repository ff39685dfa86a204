"""Fuzz the gateway's HTTP surface (hypothesis): arbitrary JSON, near-valid OpenAI bodies and raw bytes through
a real gateway and emulated replica on loopback never get a 5xx, and every refusal is an OpenAI error body."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from contextlib import AsyncExitStack
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rt_servers import MODEL, deployment, engine_app, serving

from oserve.runtime.gateway import Gateway, GatewayLimits, make_gateway_app

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
TEXT_PART = st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=9)})
MESSAGE = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["system", "user", "assistant", "tool"]),
        "content": st.text(max_size=40) | st.lists(TEXT_PART, max_size=2),
    }
)
SAMPLING = {
    "model": st.just(MODEL),
    "max_tokens": st.integers(1, 24),
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
    "temperature": st.floats(0, 2),
    "top_p": st.floats(0.01, 1),
    "stop": st.text(max_size=5) | st.lists(st.text(max_size=3), max_size=2),
    "seed": st.integers(0, 2**31),
    "user": st.text(max_size=5),
}
COMPLETION = st.fixed_dictionaries(
    {"prompt": st.text(max_size=60) | st.lists(st.integers(0, 32000), min_size=1, max_size=4)},
    optional=SAMPLING,
)
CHAT = st.fixed_dictionaries(
    {"messages": st.lists(MESSAGE, min_size=1, max_size=3)},
    optional={**SAMPLING, "max_completion_tokens": st.integers(1, 24)},
)
VALID = COMPLETION | CHAT
# a valid body with one field replaced by something else: a wrong type, out of range, a strange shape
BAD_VALUE = (
    JSON
    | st.integers(-(2**70), 2**70)
    | st.sampled_from(
        [0, -1, 4096, 2**31, 10**30, float("nan"), float("inf"), "", [], {}, [[]], [-1], ["a", "b"]]
    )
)
FIELDS = [
    "model",
    "prompt",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "stream",
    "stream_options",
    "n",
]
FIELDS += ["temperature", "top_p", "stop", "seed", "presence_penalty", "logprobs", "echo"]
MUTATED = st.builds(lambda body, key, value: {**body, key: value}, VALID, st.sampled_from(FIELDS), BAD_VALUE)
PAYLOAD = (
    VALID.map(lambda b: json.dumps(b).encode())
    | MUTATED.map(lambda b: json.dumps(b).encode())  # json.dumps writes NaN / Infinity: invalid JSON
    | JSON.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=80)
)


@pytest.fixture(scope="module")
def gateway_address():
    """A gateway and one fast emulated replica on a loop in a background thread; yields (host, port)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    stack = AsyncExitStack()

    async def start() -> str:
        replica = await stack.enter_async_context(serving(engine_app(speed=1e4)))
        limits = GatewayLimits(max_body_bytes=4096)
        gw = Gateway(deployment(["r0"]), {"r0": replica}, limits=limits)
        return await stack.enter_async_context(serving(make_gateway_app(gw)))

    url = urlsplit(asyncio.run_coroutine_threadsafe(start(), loop).result(30))
    yield url.hostname, url.port
    asyncio.run_coroutine_threadsafe(stack.aclose(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.sampled_from(["/v1/completions", "/v1/chat/completions"]),
    method=st.sampled_from(["POST", "POST", "POST", "GET", "PUT"]),
    payload=PAYLOAD,
)
def test_no_input_gets_a_5xx(gateway_address, path, method, payload):
    conn = http.client.HTTPConnection(*gateway_address, timeout=30)
    try:
        conn.request(method, path, body=payload, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    assert resp.status < 500, (resp.status, body[:300])
    if resp.status >= 400:
        error = json.loads(body)["error"]
        assert set(error) == {"message", "type", "param", "code"}

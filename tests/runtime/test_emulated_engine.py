"""The emulated engine over real loopback HTTP: vLLM's API subset, exact token counts, the cost model's pace,
continuous batching, KV pressure, metrics names, aborts and graceful shutdown of the `oserve engine` process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from rt_servers import MODEL, async_test, content_of, engine_app, free_port, read_sse, serving

from oserve.perf import CostModel
from oserve.runtime.api import CHAT_TOKENS_PER_MESSAGE
from oserve.runtime.engine.emulated import ENGINE_KEY, text_of
from oserve.spec import ReplicaConfig, get_gpu, get_model

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.mark.parametrize(
    ("prompt", "prompt_tokens"),
    [("x" * 400, 100), ("x" * 401, 101), ([5, 6, 7], 3), ([[1, 2, 3, 4]], 4), (["abcdefgh"], 2)],
)
@async_test
async def test_completion_has_exact_token_counts(prompt, prompt_tokens):
    async with serving(engine_app()) as url, aiohttp.ClientSession() as http:
        body = {"model": MODEL, "prompt": prompt, "max_tokens": 7}
        async with http.post(f"{url}/v1/completions", json=body) as resp:
            assert resp.status == 200
            data = await resp.json()
    assert data["object"] == "text_completion"
    assert data["usage"] == {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": 7,
        "total_tokens": prompt_tokens + 7,
    }
    assert data["choices"][0]["text"] == text_of(0, 7)
    assert data["choices"][0]["finish_reason"] == "length"


@async_test
async def test_chat_stream_sends_one_chunk_per_token_then_usage_and_done():
    async with serving(engine_app()) as url, aiohttp.ClientSession() as http:
        body = {
            "messages": [{"role": "system", "content": "abcd"}, {"role": "user", "content": "x" * 40}],
            "max_completion_tokens": 12,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        async with http.post(f"{url}/v1/chat/completions", json=body) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            events = await read_sse(resp)
    assert events[-1] == "[DONE]"
    tokens = content_of(events)
    assert len(tokens) == 12 and "".join(tokens) == text_of(0, 12)
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert events[-3]["choices"][0]["finish_reason"] == "length"
    prompt = 1 + 10 + 2 * CHAT_TOKENS_PER_MESSAGE
    assert events[-2]["choices"] == []
    assert events[-2]["usage"] == {
        "prompt_tokens": prompt,
        "completion_tokens": 12,
        "total_tokens": prompt + 12,
    }


@async_test
async def test_default_max_tokens_and_models_and_health():
    async with serving(engine_app(name="served")) as url, aiohttp.ClientSession() as http:
        async with http.post(f"{url}/v1/completions", json={"prompt": "hi"}) as resp:
            assert (await resp.json())["usage"]["completion_tokens"] == 256
        async with http.get(f"{url}/v1/models") as resp:
            card = (await resp.json())["data"][0]
        async with http.get(f"{url}/health") as resp:
            assert resp.status == 200
    assert card["id"] == "served" and card["root"] == MODEL and card["max_model_len"] == 4096


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": "other", "prompt": "x"}, 404, "model"),
        ({"prompt": "x", "max_tokens": 5000}, 400, "max_tokens"),
        ({"prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
        ({"prompt": "x", "n": 2}, 400, "n"),
        ({"prompt": ["a", "b"]}, 400, "prompt"),
        ({"max_tokens": 3}, 400, "prompt"),
        ({"prompt": "x", "temperature": -1}, 400, "temperature"),
        ({"prompt": "x", "stream": "yes"}, 400, "stream"),
    ],
)
@async_test
async def test_bad_requests_get_openai_error_bodies(body, status, param):
    async with (
        serving(engine_app()) as url,
        aiohttp.ClientSession() as http,
        http.post(f"{url}/v1/completions", json=body) as resp,
    ):
        assert resp.status == status
        error = (await resp.json())["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and error["message"]


@async_test
async def test_context_over_max_model_len_is_a_400_as_vllm_answers_it():
    """max_model_len is the model's context capped by the KV cache: prompt + max_tokens over it, or a prompt
    that fills it with no max_tokens, gets vLLM's 400; exactly at it is served."""
    app = engine_app(200.0, gpu_memory_utilization=0.2)
    engine = app[ENGINE_KEY]
    limit = engine.max_model_len
    assert limit < get_model(MODEL).max_position_embeddings  # the small cache caps it
    bodies = [
        ({"prompt": [1] * (limit - 2), "max_tokens": 2}, 200, None),
        ({"prompt": [1] * (limit - 2), "max_tokens": 3}, 400, "max_tokens"),
        ({"prompt": [1] * (limit - 1)}, 200, None),
        ({"prompt": [1] * limit}, 400, "prompt"),
    ]
    async with serving(app) as url, aiohttp.ClientSession() as http:
        for body, status, param in bodies:
            async with http.post(f"{url}/v1/completions", json=body) as resp:
                assert resp.status == status
                data = await resp.json()
            if status == 400:
                error = data["error"]
                assert error["code"] == "context_length_exceeded" and error["param"] == param
                assert error["type"] == "invalid_request_error"
                assert f"maximum context length is {limit} tokens" in error["message"]
            else:
                assert data["usage"]["prompt_tokens"] + data["usage"]["completion_tokens"] <= limit


@async_test
async def test_malformed_json_is_a_400():
    async with serving(engine_app()) as url, aiohttp.ClientSession() as http:
        for raw in (b"{not json", b"[1, 2]", b"", b"\xff"):
            async with http.post(f"{url}/v1/chat/completions", data=raw) as resp:
                assert resp.status == 400
                assert (await resp.json())["error"]["code"] == "invalid_json"


@async_test
async def test_a_request_takes_at_least_the_cost_models_time():
    """Pacing: a lone request's k-th token comes no earlier than its prefill step and k - 1 decode steps, on the
    virtual clock divided by ``speed`` (sleeping guarantees the lower bound; the upper one is loose)."""
    speed, out = 10.0, 40
    model, config = get_model(MODEL), ReplicaConfig(get_gpu("H100"))
    cost = CostModel(model, config)
    steps_s = [cost.prefill_time(1, 100)] + [cost.decode_time(1, 100 + k) for k in range(1, out)]
    due_s = np.cumsum(steps_s) / speed  # when each token is due after the request is sent, at the earliest
    async with serving(engine_app(speed)) as url, aiohttp.ClientSession() as http:
        start = time.monotonic()
        body = {"prompt": "x" * 400, "max_tokens": out, "stream": True}
        async with http.post(f"{url}/v1/completions", json=body) as resp:
            stamps = []
            async for line in resp.content:
                if line.startswith(b"data: {"):
                    stamps.append(time.monotonic())
    assert len(stamps) == out
    assert np.all(np.array(stamps) - start >= due_s)
    assert stamps[-1] - start < 10 * due_s[-1] + 1.0


@async_test
async def test_concurrent_requests_share_steps():
    """Continuous batching: 16 requests of 30 tokens sent together take about 30 iterations, not 16 x 30."""
    app = engine_app(20.0)
    async with serving(app) as url, aiohttp.ClientSession() as http:

        async def one() -> int:
            async with http.post(f"{url}/v1/completions", json={"prompt": "x" * 80, "max_tokens": 30}) as r:
                return (await r.json())["usage"]["completion_tokens"]

        counts = await asyncio.gather(*(one() for _ in range(16)))
        steps = app[ENGINE_KEY].steps
    assert counts == [30] * 16
    assert 30 <= steps <= 2 * 30


@async_test
async def test_kv_pressure_queues_and_preempts_but_completes_everything():
    """A replica whose KV cache holds ~7.8k tokens gets 16 requests of 700: they queue or are preempted by
    recompute, and each still returns exactly its tokens; the gauges report the pressure."""
    app = engine_app(20.0, gpu_memory_utilization=0.25, max_model_len=1024)
    engine = app[ENGINE_KEY]
    assert engine.capacity_tokens < 16 * 700
    async with serving(app) as url, aiohttp.ClientSession() as http:

        async def one() -> int:
            async with http.post(
                f"{url}/v1/completions", json={"prompt": "x" * 1600, "max_tokens": 300}
            ) as r:
                return (await r.json())["usage"]["completion_tokens"]

        tasks = [asyncio.create_task(one()) for _ in range(16)]
        peak_kv, peak_waiting = 0.0, 0
        while not all(t.done() for t in tasks):
            peak_kv, peak_waiting = max(peak_kv, engine.kv_usage), max(peak_waiting, engine.num_waiting)
            await asyncio.sleep(0.005)
        counts = [t.result() for t in tasks]
        async with http.get(f"{url}/metrics") as resp:
            metrics = await resp.text()
    assert counts == [300] * 16
    assert peak_kv > 0.8 and peak_waiting > 0
    assert engine.kv_usage == 0.0 and engine.num_in_flight == 0
    preempted = next(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("vllm:num_preemptions_total")
    )
    assert preempted == engine.preemptions


@async_test
async def test_metrics_use_vllm_names():
    async with serving(engine_app()) as url, aiohttp.ClientSession() as http:
        async with http.post(f"{url}/v1/completions", json={"prompt": "x", "max_tokens": 3}) as resp:
            await resp.read()
        async with http.get(f"{url}/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:gpu_cache_usage_perc",
        "vllm:num_preemptions_total",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:request_success_total",
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:e2e_request_latency_seconds_bucket",
    ):
        assert f"\n{name}{{" in text, name
    assert 'vllm:generation_tokens_total{engine="0",model_name="llama-2-7b"} 3.0' in text


@async_test
async def test_a_client_that_leaves_mid_stream_frees_its_kv():
    app = engine_app(5.0)
    engine = app[ENGINE_KEY]
    async with serving(app) as url:
        async with aiohttp.ClientSession() as http:
            body = {"prompt": "x" * 4000, "max_tokens": 2000, "stream": True}
            async with http.post(f"{url}/v1/completions", json=body) as resp:
                await resp.content.readline()
                assert engine.kv_usage > 0
        for _ in range(200):
            if engine.num_in_flight == 0:
                break
            await asyncio.sleep(0.01)
        assert engine.num_in_flight == 0 and engine.kv_usage == 0.0 and engine.num_running == 0


def test_engine_command_drains_in_flight_requests_on_sigterm():
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
        "4",
    ]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    try:

        async def scenario() -> list:
            async with aiohttp.ClientSession() as http:
                for _ in range(300):
                    try:
                        async with http.get(f"http://127.0.0.1:{port}/health") as r:
                            if r.status == 200:
                                break
                    except aiohttp.ClientConnectionError:
                        await asyncio.sleep(0.05)
                body = {"prompt": "hello", "max_tokens": 120, "stream": True}
                async with http.post(f"http://127.0.0.1:{port}/v1/completions", json=body) as resp:
                    first = await resp.content.readline()
                    proc.send_signal(signal.SIGTERM)
                    events = await read_sse(resp)
                return [first, *events]

        events = asyncio.run(asyncio.wait_for(scenario(), 60))
        assert events[-1] == "[DONE]"
        assert len(content_of(events[1:])) == 119  # the first line was read raw
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_engine_command_without_the_serve_extra_names_it():
    code = "import sys; sys.modules['aiohttp'] = None; from oserve.cli.main import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run(
        [sys.executable, "-c", code, "engine", "--model", MODEL],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "serve extra" in done.stderr and "oserve[serve]" in done.stderr

"""A small load generator for an OpenAI-compatible endpoint: replays (arrival, prompt tokens, output tokens) from a
trace open-loop, streaming every ``stream_every``-th request, and checks each answer's token count.

Output tokens are asked for with ``max_tokens`` (and ``ignore_eos``), so an engine that honours it (the emulated
engine always does) returns exactly that many: a request is ``ok`` only when it completed with the right count.
Prompts are filler words, about one token each (``prompt_text``). Every prompt is the same words, so an engine that
caches prefixes (the emulated one does, as vLLM) finds all but the tail of each prompt cached; a trace that says
nothing of shared prefixes (the simulator then models none) is replayed with ``distinct=True``: each prompt opens
with words of its own, so no two share a block. Used by the runtime tests and ``benchmarks/runtime_switch.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np

from oserve.trace import Trace

__all__ = ["LoadRequest", "Outcome", "prompt_text", "requests_from_trace", "run_load", "send", "summarise"]


@dataclass(frozen=True, slots=True)
class LoadRequest:
    arrival_s: float  # after the start of the run
    prompt_tokens: int
    output_tokens: int
    stream: bool
    chat: bool = False
    prefix_id: int | None = None  # opens the prompt with words of its own (no prefix shared with another)


def prompt_text(prompt_tokens: int, prefix_id: int | None = None) -> str:
    """Filler words, one token each as the gateway counts them (``prompt_tokens - 1`` of them, at least one);
    with ``prefix_id`` (0 to 10**9 - 1) the first three words are its digits, three at a time, so the prompt's
    first block is its own."""
    words = ["the"] * max(prompt_tokens - 1, 1)
    if prefix_id is not None:
        digits = f"{prefix_id % 10**9:09d}"
        for k in range(min(3, len(words))):
            words[k] = digits[3 * k : 3 * k + 3]
    return " ".join(words)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One request's fate: HTTP status, tokens received vs asked, the error text when it failed, timings."""

    request: LoadRequest
    status: int
    tokens: int
    error: str | None
    sent_s: float
    latency_s: float
    replica: str | None = None  # the gateway's ``x-oserve-replica`` header: which replica answered

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None and self.tokens == self.request.output_tokens


def requests_from_trace(
    trace: Trace,
    *,
    time_scale: float = 1.0,
    stream_every: int = 2,
    chat_every: int = 3,
    max_prompt_tokens: int = 4000,
    max_output_tokens: int = 2000,
    distinct: bool = False,
) -> list[LoadRequest]:
    """The trace's requests, arrivals divided by ``time_scale`` (10: ten times faster), lengths clipped;
    ``distinct``: no two prompts share a prefix (``prompt_text``)."""
    arrivals = (trace.arrival_s - trace.arrival_s.min()) / time_scale if len(trace) else np.zeros(0)
    return [
        LoadRequest(
            float(a),
            int(min(max(p, 1), max_prompt_tokens)),
            int(min(max(o, 1), max_output_tokens)),
            stream=stream_every > 0 and i % stream_every == 0,
            chat=chat_every > 0 and i % chat_every == 1,
            prefix_id=i if distinct else None,
        )
        for i, (a, p, o) in enumerate(zip(arrivals, trace.prompt_tokens, trace.output_tokens, strict=True))
    ]


def _body(model: str, r: LoadRequest) -> tuple[str, dict[str, Any]]:
    text = prompt_text(r.prompt_tokens, r.prefix_id)
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": r.output_tokens,
        "ignore_eos": True,
        "stream": r.stream,
    }
    if r.chat:
        body["messages"] = [{"role": "user", "content": text}]
        return "/v1/chat/completions", body
    body["prompt"] = text
    return "/v1/completions", body


async def send(session: aiohttp.ClientSession, url: str, model: str, r: LoadRequest, t0: float) -> Outcome:
    """One request; streaming answers are read to the end, counting one token per content event."""
    path, body = _body(model, r)
    sent = time.monotonic()
    tokens, error, status, replica = 0, None, 0, None
    try:
        async with session.post(url + path, json=body) as resp:
            status = resp.status
            replica = resp.headers.get("x-oserve-replica")
            if resp.status != 200:
                error = (await resp.text())[:300]
            elif not r.stream:
                data = await resp.json()
                tokens = int(data["usage"]["completion_tokens"])
            else:
                done = False
                async for raw in resp.content:
                    line = raw.decode().strip()
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        done = True
                        break
                    event = json.loads(payload)
                    if "error" in event:
                        error = event["error"].get("message", "error event")
                        continue
                    choice = event["choices"][0]
                    piece = choice.get("text") if "text" in choice else choice.get("delta", {}).get("content")
                    tokens += 1 if piece else 0
                if not done and error is None:
                    error = "stream ended without [DONE]"
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
        error = repr(exc)
    return Outcome(r, status, tokens, error, sent - t0, time.monotonic() - sent, replica)


async def run_load(
    url: str,
    model: str,
    requests: Sequence[LoadRequest],
    *,
    until: asyncio.Event | None = None,
    timeout_s: float = 300.0,
) -> list[Outcome]:
    """Send every request at its arrival time (open loop) and wait for all answers. With ``until``, replay the
    requests again and again (each pass shifted by the span of the list) until the event is set."""
    if not requests:
        return []
    span = max(r.arrival_s for r in requests) + 1e-3
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s)
    ) as s:
        t0 = time.monotonic()

        async def at(r: LoadRequest, offset_s: float) -> Outcome:
            await asyncio.sleep(max(0.0, t0 + offset_s + r.arrival_s - time.monotonic()))
            return await send(s, url, model, r, t0)

        tasks = [asyncio.create_task(at(r, 0.0)) for r in requests]
        passes = 1
        while until is not None and not until.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(until.wait(), t0 + passes * span - time.monotonic())
            if not until.is_set():
                tasks += [asyncio.create_task(at(r, passes * span)) for r in requests]
                passes += 1
        return list(await asyncio.gather(*tasks))


def summarise(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """Counts of ok / failed requests, streamed ones, and latency percentiles (seconds)."""
    lat = np.array([o.latency_s for o in outcomes if o.ok]) if outcomes else np.zeros(0)
    failed = [o for o in outcomes if not o.ok]
    return {
        "requests": len(outcomes),
        "ok": len(outcomes) - len(failed),
        "failed": len(failed),
        "streamed": sum(o.request.stream for o in outcomes),
        "latency_p50_s": float(np.percentile(lat, 50)) if len(lat) else None,
        "latency_p99_s": float(np.percentile(lat, 99)) if len(lat) else None,
        "errors": sorted(
            {(o.status, (o.error or f"{o.tokens}/{o.request.output_tokens} tokens")[:120]) for o in failed}
        ),
    }

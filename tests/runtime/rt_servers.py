"""Helpers for the runtime tests: real aiohttp servers on loopback ports, an SSE reader, async tests without a
plugin (``@async_test``)."""

from __future__ import annotations

import asyncio
import functools
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from oserve.runtime.engine.emulated import make_engine_app
from oserve.spec import ReplicaConfig, get_gpu, get_model

MODEL = "llama-2-7b"


def async_test(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an ``async def`` test in a fresh event loop."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(fn(*args, **kwargs), 60))

    return wrapper


def engine_app(
    speed: float = 50.0, *, name: str = MODEL, api_key: str | None = None, **config: Any
) -> web.Application:
    """An emulated Llama-2-7B replica on one H100 (``config`` overrides ``ReplicaConfig`` fields)."""
    replica = ReplicaConfig(get_gpu("H100"), **config)
    return make_engine_app(get_model(MODEL), replica, served_model_name=name, speed=speed, api_key=api_key)


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` on a free loopback port; yields its base URL (``http://127.0.0.1:PORT``)."""
    # as the gateway and the engines serve: a client that leaves cancels its handler
    server = TestServer(app, host="127.0.0.1", handler_cancellation=True)
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def read_sse(resp: aiohttp.ClientResponse) -> list[Any]:
    """The payloads of a server-sent event stream: parsed JSON objects, and the string ``"[DONE]"``."""
    events: list[Any] = []
    async for line in resp.content:
        text = line.decode().strip()
        if not text.startswith("data: "):
            continue
        data = text[len("data: ") :]
        events.append(data if data == "[DONE]" else json.loads(data))
    return events


def content_of(events: list[Any]) -> list[str]:
    """The text of each token chunk (completions ``text`` or chat ``delta.content``)."""
    out = []
    for e in events:
        if not isinstance(e, dict) or not e.get("choices"):
            continue
        choice = e["choices"][0]
        text = choice.get("text") if "text" in choice else choice.get("delta", {}).get("content")
        if text:
            out.append(text)
    return out


def deployment(names: list[str], weights: dict[str, dict[str, float]] | None = None, **edges: list[int]):
    """A deployment of one-H100 Llama-2-7B replicas named ``names``, with ``weights`` over ``edges``'s grid."""
    from oserve.spec import Deployment, Replica

    config = ReplicaConfig(get_gpu("H100"))
    replicas = tuple(Replica(config, (i,), n) for i, n in enumerate(names))
    return Deployment(MODEL, replicas, weights or {}, dict(edges))


def metric_value(text: str, name: str, **labels: str) -> float:
    """A sample's value from Prometheus text (0 when absent)."""
    want = [f'{k}="{v}"' for k, v in labels.items()]
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            head = line.rsplit(" ", 1)[0]
            if all(w in head for w in want):
                return float(line.rsplit(" ", 1)[1])
    return 0.0

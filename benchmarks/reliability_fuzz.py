"""The fuzz phase of ``benchmarks/reliability.py``: random and mutated requests over the OpenAI and admin surfaces
of a running ``oserve serve`` (its credentials and deployment bodies are defined here, shared with the load and
fault phases). Not a command of its own: ``python benchmarks/reliability.py --phases fuzz``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from typing import Any

import aiohttp
import yaml

KEY, TOKEN = "sk-bench", "admin-bench"
AUTH = {"Authorization": f"Bearer {KEY}"}
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
MODEL = "llama-3-8b"


def deployment_body(shapes: list[tuple[str, int, list[int]]]) -> dict[str, Any]:
    return {
        "model": MODEL,
        "replicas": [{"name": n, "gpu": "H100", "tp": tp, "gpus": g} for n, tp, g in shapes],
    }


FOUR = deployment_body([(f"r{i}", 1, [i]) for i in range(4)])
TP4 = deployment_body([("big", 4, [0, 1, 2, 3])])


# -- 1. fuzz ----------------------------------------------------------------------------------------------------
_JUNK: list[Any] = [None, -1, 0, 1.5, float("nan"), float("inf"), "x", "../../etc/passwd", [], {}, True,
                    2**70, "", [[[]]], {"a": {"b": None}}, 1e308, "H100", "\u0000", -(2**63)]  # fmt: skip


def _corrupt(value: Any, rng: random.Random, depth: int = 0) -> Any:
    """``value`` with one field somewhere replaced by junk, dropped, or left alone."""
    if isinstance(value, dict) and value and depth < 4:
        key = rng.choice(list(value))
        out = dict(value)
        roll = rng.random()
        if roll < 0.15:
            del out[key]
        elif roll < 0.55:
            out[key] = rng.choice(_JUNK)
        else:
            out[key] = _corrupt(value[key], rng, depth + 1)
        return out
    if isinstance(value, list) and value and depth < 4:
        out = list(value)
        i = rng.randrange(len(out))
        out[i] = _corrupt(out[i], rng, depth + 1) if rng.random() < 0.6 else rng.choice(_JUNK)
        return out
    return rng.choice(_JUNK)


def _encode(value: Any, rng: random.Random) -> bytes:
    if rng.random() < 0.3:
        with contextlib.suppress(yaml.YAMLError):
            return yaml.safe_dump(value).encode()
    return json.dumps(value).encode()  # NaN / Infinity as JavaScript spells them


def _openai_case(rng: random.Random) -> tuple[str, str, bytes, dict[str, str]]:
    completion = {"model": MODEL, "prompt": "hello there", "max_tokens": 4, "stream": rng.random() < 0.3}
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    roll = rng.random()
    path = "/v1/completions" if rng.random() < 0.6 else "/v1/chat/completions"
    base = completion if path == "/v1/completions" else chat
    headers = dict(AUTH)
    method = "POST"
    if roll < 0.45:
        body = _encode(_corrupt(base, rng), rng)
    elif roll < 0.6:
        body = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 300)))
    elif roll < 0.7:
        body = b"[" * rng.choice([10, 1000, 100000]) + b"]" * rng.choice([0, 10])
    elif roll < 0.78:
        body, headers = (
            _encode(base, rng),
            rng.choice([{}, {"Authorization": "Bearer nope"}, {"Authorization": KEY}]),
        )
    elif roll < 0.86:
        method, body = rng.choice(["GET", "PUT", "DELETE", "PATCH"]), b""
        path = rng.choice([path, "/v1/models", "/health", "/metrics", "/v1/../admin/status", "/%2e%2e/x"])
    elif roll < 0.9:
        body = b'{"prompt": "' + b"x" * (5 << 20) + b'"}'  # over the body cap
    else:
        body = json.dumps(base).encode()
    return method, path, body, headers


def _admin_case(rng: random.Random) -> tuple[str, str, bytes, dict[str, str]]:
    roll = rng.random()
    headers = dict(ADMIN)
    if roll < 0.55:
        body = _encode(_corrupt(FOUR, rng), rng)
    elif roll < 0.7:
        body = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 200)))
    elif roll < 0.78:
        body = rng.choice([b"[" * 5000, b"a: &a [*a]", b"{" * 3000, b"- " * 2000])
    elif roll < 0.82:
        body = b"x" * (2 << 20)  # over the admin cap
    elif roll < 0.92:
        body, headers = _encode(FOUR, rng), rng.choice([{}, AUTH, {"Authorization": "Bearer " + TOKEN + "x"}])
    else:
        return "GET", rng.choice(["/admin/status", "/admin/deployment", "/admin/x"]), b"", headers
    return "POST", "/admin/deployment", body, headers


async def fuzz(url: str, count: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    cases = [(_openai_case if i % 2 == 0 else _admin_case)(rng) for i in range(count)]
    statuses: Counter[int] = Counter()
    surfaces: dict[str, Counter[int]] = {"openai": Counter(), "admin": Counter()}
    examples: list[str] = []
    queue = iter(cases)
    t0 = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as http:

        async def worker() -> None:
            for method, path, body, headers in queue:
                try:
                    async with http.request(method, url + path, data=body, headers=headers) as r:
                        await r.read()
                        status = r.status
                except (aiohttp.ClientError, TimeoutError) as exc:
                    status = 0  # connection-level failure: counted apart
                    examples.append(f"{method} {path}: {exc!r}"[:200])
                statuses[status] += 1
                surfaces["admin" if path.startswith("/admin") else "openai"][status] += 1
                if status >= 500 and len(examples) < 10:
                    examples.append(f"{status} {method} {path} {body[:120]!r}")

        await asyncio.gather(*(worker() for _ in range(32)))
    return {
        "requests": count,
        "seconds": time.monotonic() - t0,
        "5xx": sum(n for s, n in statuses.items() if s >= 500),
        "connection_errors": statuses.get(0, 0),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "by_surface": {k: {str(s): n for s, n in sorted(v.items())} for k, v in surfaces.items()},
        "examples": examples[:10],
    }

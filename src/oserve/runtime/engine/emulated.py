"""The emulated engine: an aiohttp server speaking the subset of ``vllm serve``'s HTTP API that OServe uses,
backed by a ``RealtimeEngine`` (the simulator's engine model on the wall clock).

Endpoints: ``POST /v1/completions`` and ``POST /v1/chat/completions`` (``stream`` true or false; SSE chunks of
one token each, ``data: [DONE]`` last; ``usage`` in the body, or in a last chunk with
``stream_options.include_usage``), ``GET /v1/models``, ``GET /health`` and ``GET /metrics`` with vLLM's names
(``vllm:num_requests_running``, ``vllm:num_requests_waiting``, ``vllm:kv_cache_usage_perc`` and its older name
``vllm:gpu_cache_usage_perc``, token and request counters, ``vllm:prefix_cache_queries`` and
``vllm:prefix_cache_hits`` in tokens, TTFT / TPOT / E2E histograms). With prefix caching on (the replica config's
``enable_prefix_caching``), each prompt's ``block_size``-token blocks are hashed as ``oserve.runtime.api``'s
``prompt_hashes`` does and the engine reuses cached prefixes as vLLM does.

A request produces exactly ``max_tokens`` tokens (``max_completion_tokens`` for chat; ``default_max_tokens``
when absent, capped by the context left), finish reason ``length``; prompt tokens follow
``oserve.runtime.api``'s estimate. The text is a fixed cycle of 4-character words, so it re-estimates to the
same token count.

Disaggregated roles (the replica config's ``role``, reported as ``oserve:engine_role{role=...} 1`` on
/metrics): a request carrying vLLM's ``kv_transfer_params`` with ``do_remote_decode`` is answered with
``kv_transfer_params`` naming where its KV waits (``runtime.engine.kv_handoff``), as a NixlConnector prefill
replica answers; one with ``do_remote_prefill`` waits for the KV copy, priced by the cost model
(``kv_handoff.handoff_s``), then decodes from the prompt's KV instead of prefilling it
(``oserve:kv_transfers_received`` and ``oserve:kv_transfer_seconds`` count them, in emulated seconds). Any role
serves a plain request whole, as vLLM's ``kv_both`` engines do.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from oserve.errors import GatewayError
from oserve.runtime.api import (
    CHAT,
    COMPLETIONS,
    SSE_DONE,
    GenerationRequest,
    parse_request,
    prompt_hashes,
)
from oserve.runtime.auth import bearer_matches
from oserve.runtime.engine.kv_handoff import handoff_params, handoff_s, kv_transfer_params, remote_prefill
from oserve.runtime.engine.realtime import DEFAULT_TICK_S, Generation, RealtimeEngine
from oserve.runtime.server import error_response, serve_until_signal
from oserve.spec.model import ModelSpec
from oserve.spec.replica import ReplicaConfig

__all__ = ["DEFAULT_MAX_TOKENS", "make_engine_app", "serve_engine"]

DEFAULT_MAX_TOKENS = 256
MAX_BODY_BYTES = 16 << 20
WORDS = (" the", " and", " for", " you", " are", " not", " but", " all", " can", " one")
_LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0)
_TPOT_BUCKETS_S = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5)

ENGINE_KEY = web.AppKey("engine", RealtimeEngine)
STATE_KEY = web.AppKey("state", dict)


def text_of(start: int, count: int) -> str:
    """The emulated output's tokens ``start .. start + count - 1``."""
    n = len(WORDS)
    return "".join(WORDS[i % n] for i in range(start, start + count))


class _Metrics:
    """vLLM's metric names on a registry of this app's own (several engines may share a process in tests)."""

    def __init__(self, model_name: str) -> None:
        self.registry = r = CollectorRegistry()
        labels = ["model_name", "engine"]
        self.labels = {"model_name": model_name, "engine": "0"}

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, labels, registry=r)

        self.running = gauge("vllm:num_requests_running", "Number of requests in model execution batches.")
        self.waiting = gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.")
        self.kv = gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.")
        self.kv_legacy = gauge(
            "vllm:gpu_cache_usage_perc", "GPU KV-cache usage (older name of kv_cache_usage_perc)."
        )
        self.preemptions = Counter(
            "vllm:num_preemptions", "Cumulative number of preemptions.", labels, registry=r
        )
        self.prompt_tokens = Counter(
            "vllm:prompt_tokens", "Number of prefill tokens processed.", labels, registry=r
        )
        self.generation_tokens = Counter(
            "vllm:generation_tokens", "Number of generation tokens processed.", labels, registry=r
        )
        self.success = Counter(
            "vllm:request_success",
            "Count of successfully processed requests.",
            [*labels, "finished_reason"],
            registry=r,
        )
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds",
            "Time to first token.",
            labels,
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.tpot = Histogram(
            "vllm:time_per_output_token_seconds",
            "Time per output token.",
            labels,
            buckets=_TPOT_BUCKETS_S,
            registry=r,
        )
        self.e2e = Histogram(
            "vllm:e2e_request_latency_seconds",
            "End-to-end request latency.",
            labels,
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.prefix_queries = Counter(
            "vllm:prefix_cache_queries",
            "Prefix cache queries, in terms of number of queried tokens.",
            labels,
            registry=r,
        )
        self.prefix_hits = Counter(
            "vllm:prefix_cache_hits",
            "Prefix cache hits, in terms of number of cached tokens.",
            labels,
            registry=r,
        )
        self.role = Gauge(
            "oserve:engine_role", "The replica's disaggregation role (1 on its label).", [*labels, "role"],
            registry=r,
        )  # fmt: skip
        self.kv_transfers = Counter(
            "oserve:kv_transfers_received", "Requests whose prompt KV came from a prefill replica.", labels,
            registry=r,
        )  # fmt: skip
        self.kv_transfer_s = Counter(
            "oserve:kv_transfer_seconds", "Emulated seconds spent receiving prompt KV.", labels, registry=r
        )
        self._last_preemptions = self._last_queries = self._last_hits = 0
        self._children: tuple | None = None

    def record(self, gen: Generation) -> None:
        if self._children is None:  # the labelled series, looked up once
            lb = self.labels
            self._children = (
                self.prompt_tokens.labels(**lb),
                self.generation_tokens.labels(**lb),
                self.success.labels(**lb, finished_reason="length"),
                self.ttft.labels(**lb),
                self.e2e.labels(**lb),
                self.tpot.labels(**lb),
            )
        prompt, generation, success, ttft, e2e, tpot = self._children
        prompt.inc(gen.prompt_tokens)
        generation.inc(gen.output_tokens)
        success.inc()
        ttft.observe(gen.first_token_s - gen.arrival_s)
        e2e.observe(gen.finish_s - gen.arrival_s)
        if gen.output_tokens > 1:
            tpot.observe((gen.finish_s - gen.first_token_s) / (gen.output_tokens - 1))

    def render(self, engine: RealtimeEngine) -> bytes:
        lb = self.labels
        self.running.labels(**lb).set(engine.num_running)
        self.waiting.labels(**lb).set(engine.num_waiting)
        self.kv.labels(**lb).set(engine.kv_usage)
        self.kv_legacy.labels(**lb).set(engine.kv_usage)
        self.preemptions.labels(**lb).inc(engine.preemptions - self._last_preemptions)
        self._last_preemptions = engine.preemptions
        queries, hits = engine.prefix_cache_queries, engine.prefix_cache_hits
        self.prefix_queries.labels(**lb).inc(queries - self._last_queries)
        self.prefix_hits.labels(**lb).inc(hits - self._last_hits)
        self._last_queries, self._last_hits = queries, hits
        return generate_latest(self.registry)


class _Server:
    """The request handlers of one emulated replica."""

    def __init__(self, engine: RealtimeEngine, model_name: str, default_max_tokens: int) -> None:
        self.engine = engine
        self.model_name = model_name
        self.default_max_tokens = default_max_tokens
        self.metrics = _Metrics(model_name)
        self.created = int(time.time())
        self.draining = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._ids = itertools.count()
        self._id_prefix = os.urandom(4).hex()
        self.metrics.role.labels(**self.metrics.labels, role=engine.config.role).set(1)

    async def wait_idle(self) -> None:
        await self._idle.wait()

    # -- endpoints --------------------------------------------------------------------------------------------
    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=503 if self.draining else 200)

    async def models(self, request: web.Request) -> web.Response:
        card = {
            "id": self.model_name,
            "object": "model",
            "created": self.created,
            "owned_by": "oserve-emulated",
            "root": self.engine.model.name,
            "max_model_len": self.engine.max_model_len,
        }
        return web.json_response({"object": "list", "data": [card]})

    async def metrics_endpoint(self, request: web.Request) -> web.Response:
        body = self.metrics.render(self.engine)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, COMPLETIONS)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, CHAT)

    # -- generation --------------------------------------------------------------------------------------------
    def _admit(self, raw: bytes, kind: str) -> tuple[GenerationRequest, int]:
        if self.draining:
            raise GatewayError("the engine is shutting down", status=503, error_type="server_error")
        req = parse_request(kind, raw)
        if req.model is not None and req.model != self.model_name:
            raise GatewayError(
                f"the model {req.model!r} does not exist; this server serves {self.model_name!r}",
                status=404,
                error_type="invalid_request_error",
                param="model",
                code="model_not_found",
            )
        room = self.engine.max_model_len - req.prompt_tokens
        if req.max_tokens is None and room <= 0:  # vLLM: a prompt must leave room for one token
            raise GatewayError(
                f"This model's maximum context length is {self.engine.max_model_len} tokens. However, your "
                f"request has {req.prompt_tokens} input tokens. Please reduce the length of the input messages.",
                param="prompt",
                code="context_length_exceeded",
            )
        output = req.max_tokens if req.max_tokens is not None else min(self.default_max_tokens, room)
        reason = self.engine.fits(req.prompt_tokens, output)
        if reason is not None:
            raise GatewayError(
                reason, param="max_tokens" if req.max_tokens else "prompt", code="context_length_exceeded"
            )
        return req, output

    async def _generate(self, request: web.Request, kind: str) -> web.StreamResponse:
        try:
            raw = await request.read()
            req, output = self._admit(raw, kind)
        except GatewayError as exc:
            return error_response(exc)
        except web.HTTPRequestEntityTooLarge:
            return error_response(
                GatewayError("request body too large", status=413, code="request_too_large")
            )
        self.in_flight += 1
        self._idle.clear()
        engine = self.engine
        params = kv_transfer_params(raw)
        remote = remote_prefill(params)
        gen: Generation | None = None
        try:
            if remote:  # the prompt's KV crosses from the prefill replica before decoding starts here
                assert params is not None
                remote_tp = params.get("tp_size")
                tp = remote_tp if isinstance(remote_tp, int) and remote_tp >= 1 else engine.config.tp
                copy_s = handoff_s(engine.model, engine.config, req.prompt_tokens, tp)
                self.metrics.kv_transfers.labels(**self.metrics.labels).inc()
                self.metrics.kv_transfer_s.labels(**self.metrics.labels).inc(copy_s)
                await asyncio.sleep(copy_s / engine.speed)
            hashes = (
                prompt_hashes(req.prefix, engine.config.block_size) if engine.caching and not remote else ()
            )
            gen = engine.submit(req.prompt_tokens, output, hashes, remote_kv=remote)
            if req.stream:
                return await self._stream(request, req, gen)
            while not gen.done:
                await gen.tokens.get()
            self.metrics.record(gen)
            body = self._body(req, gen)
            if params is not None and params.get("do_remote_decode"):
                url = request.url
                blocks = -(-req.prompt_tokens // engine.config.block_size)
                body["kv_transfer_params"] = handoff_params(
                    self._id_prefix, url.host or "", url.port or 0, engine.config.tp, blocks
                )
            return web.json_response(body)
        finally:
            if gen is not None:
                self.engine.abort(gen)  # a no-op once finished
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()

    def _usage(self, gen: Generation) -> dict[str, int]:
        p, n = gen.prompt_tokens, gen.output_tokens
        return {"prompt_tokens": p, "completion_tokens": n, "total_tokens": p + n}

    def _new_id(self, kind: str) -> str:
        return f"{'cmpl' if kind == COMPLETIONS else 'chatcmpl'}-{self._id_prefix}{next(self._ids)}"

    def _body(self, req: GenerationRequest, gen: Generation) -> dict[str, Any]:
        text = text_of(0, gen.output_tokens)
        if req.kind == COMPLETIONS:
            choice: dict[str, Any] = {"index": 0, "text": text, "logprobs": None, "finish_reason": "length"}
            obj = "text_completion"
        else:
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": "length",
            }
            obj = "chat.completion"
        return {
            "id": self._new_id(req.kind),
            "object": obj,
            "created": int(time.time()),
            "model": self.model_name,
            "choices": [choice],
            "usage": self._usage(gen),
        }

    async def _stream(
        self, request: web.Request, req: GenerationRequest, gen: Generation
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        head = {"id": self._new_id(req.kind), "created": int(time.time()), "model": self.model_name}
        chat = req.kind == CHAT
        obj = "chat.completion.chunk" if chat else "text_completion"
        # one token per chunk: the JSON around the text is fixed, so it is rendered once
        prefix = json.dumps({**head, "object": obj}, separators=(",", ":"))[:-1].encode()
        sent = 0
        while sent < gen.output_tokens:
            n = await gen.tokens.get()
            parts = []
            for i in range(sent, sent + n):
                word = WORDS[i % len(WORDS)]
                finish = '"length"' if i == gen.output_tokens - 1 else "null"
                if chat:
                    role = '"role":"assistant",' if i == 0 else ""
                    choice = f'{{"index":0,"delta":{{{role}"content":"{word}"}},"logprobs":null,"finish_reason":{finish}}}'
                else:
                    choice = f'{{"index":0,"text":"{word}","logprobs":null,"finish_reason":{finish}}}'
                parts.append(b"data: " + prefix + f',"choices":[{choice}]}}\n\n'.encode())
            sent += n
            await resp.write(b"".join(parts))
        if req.include_usage:
            usage = {**head, "object": obj, "choices": [], "usage": self._usage(gen)}
            await resp.write(b"data: " + json.dumps(usage, separators=(",", ":")).encode() + b"\n\n")
        await resp.write(SSE_DONE)
        await resp.write_eof()
        self.metrics.record(gen)
        return resp


def make_engine_app(
    model: ModelSpec,
    config: ReplicaConfig,
    *,
    served_model_name: str,
    speed: float = 1.0,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
    tick_s: float = DEFAULT_TICK_S,
    api_key: str | None = None,
) -> web.Application:
    """An emulated replica of ``model`` on ``config`` as an aiohttp application (its engine loop starts and
    stops with the app). ``speed`` > 1 runs the cost model's clock faster than the wall clock; decode steps
    ending within ``tick_s`` of wall time are delivered together (see ``RealtimeEngine``). With ``api_key``,
    ``/v1/*`` needs ``Authorization: Bearer <api_key>`` (the gateway's per-serve secret), as vLLM's
    ``--api-key``."""
    engine = RealtimeEngine(model, config, speed=speed, tick_s=tick_s)
    server = _Server(engine, served_model_name, default_max_tokens)

    @web.middleware
    async def authenticate(request: web.Request, handler):
        if request.path.startswith("/v1/") and not bearer_matches(request, api_key or ""):
            exc = GatewayError("invalid or missing API key", status=401, error_type="authentication_error")
            return error_response(exc)
        return await handler(request)

    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[authenticate] if api_key else [])
    app[ENGINE_KEY] = engine
    app[STATE_KEY] = {"server": server}
    app.router.add_post("/v1/completions", server.completions)
    app.router.add_post("/v1/chat/completions", server.chat)
    app.router.add_get("/v1/models", server.models)
    app.router.add_get("/health", server.health)
    app.router.add_get("/metrics", server.metrics_endpoint)

    async def _lifecycle(app: web.Application):
        engine.start()
        yield
        await engine.stop()

    app.cleanup_ctx.append(_lifecycle)
    return app


async def serve_engine(
    app: web.Application, host: str, port: int, *, drain_timeout_s: float = 600.0, ready: Any = None
) -> None:
    """Serve an engine app until SIGTERM or SIGINT, then refuse new requests (503), finish the ones in flight
    (at most ``drain_timeout_s``) and return. ``ready`` (a callable) is called once listening."""
    server: _Server = app[STATE_KEY]["server"]

    def drain() -> None:
        server.draining = True

    await serve_until_signal(
        app,
        host,
        port,
        start_draining=drain,
        wait_idle=server.wait_idle,
        drain_timeout_s=drain_timeout_s,
        ready=ready,
    )

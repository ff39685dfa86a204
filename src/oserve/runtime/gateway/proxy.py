"""The gateway's request path: read and validate the body, type the request, pick a replica with the shared
router, forward the original bytes, and pass the answer (or the SSE stream) back.

Failures: a connection error, a 5xx, or an upstream that drops before its first body byte sends the request to
another eligible replica (at most ``max_attempts`` in all; a replica that refused a connection is skipped for
``down_cooldown_s``); once bytes went to the client a failure ends the stream with an SSE error event and
``data: [DONE]``. When every replica is full a request waits in the admission queue (``admission``: first come,
first served, ``max_queued`` at most, ``queue_timeout_s`` each) for a slot; a full queue or a wait past its
deadline is a 429 with ``Retry-After`` (the base ``retry_after_s`` plus up to as much again of jitter, so refused
clients do not come back in step). When the router finds no replica otherwise: 503; when every replica tried
failed: 502.

A request the router sends to a prefill replica of a P/D pool goes in two phases, as vLLM's disaggregated
proxy sends it (``runtime.engine.kv_handoff``): to the prefill replica with ``max_tokens`` 1 and
``kv_transfer_params`` asking for a remote decode, then the original request with the ``kv_transfer_params``
the prefill answered to the decode replica ``RouteTable.pick_decode`` gives, whose answer (or stream) goes to
the client. A failure in either phase retries the whole request, the failed replica excluded. A prefill
replica with no decode replica to hand over to serves the request whole (the engines are ``kv_both``).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from dataclasses import replace

import aiohttp
from aiohttp import web

from oserve.errors import GatewayError
from oserve.runtime.api import (
    CLASS_HEADER,
    SSE_DONE,
    GenerationRequest,
    error_body,
    parse_request,
    prompt_hashes,
    sse_event,
)
from oserve.runtime.engine.kv_handoff import decode_body, prefill_body
from oserve.runtime.gateway.gateway import Gateway
from oserve.runtime.gateway.routes import ReplicaLoad, RouteTable
from oserve.runtime.server import error_response

__all__ = ["Proxy"]

ROUTER_BLOCK_TOKENS = (
    16  # tokens per prefix block the gateway hashes for the router (vLLM's default block size)
)
_SSE = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
#: names the replica that answered (as llm-d's ``x-gateway-destination-endpoint``): the plan's replica name,
#: never its address
REPLICA_HEADER = "x-oserve-replica"
_COMPLETION_TOKENS = re.compile(rb'"completion_tokens"\s*:\s*(\d+)')
_UPSTREAM_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


_Outcome = tuple[float | None, float | None, int | None]  # (first byte time, TPOT seconds, output tokens)


def _describe(exc: BaseException) -> str:
    """What went wrong upstream, for the client: the kind of failure, never the replica's address."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connection refused"
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return "disconnected"
    return type(exc).__name__


def _excluded(table: RouteTable, tried: set[tuple[str, str]]) -> set[int]:
    """The indices of ``table`` this request already failed on: the same name at the same endpoint."""
    if not tried:  # most requests: nothing to scan
        return set()
    return {i for i, key in enumerate(zip(table.names, table.urls, strict=True)) if key in tried}


class _Retry(Exception):
    """The replica failed before the client got a byte; try another."""

    def __init__(self, reason: str, *, down: bool) -> None:
        super().__init__(reason)
        self.down = down
        self.load: ReplicaLoad | None = None  # the replica that failed
        self.url = ""  # its endpoint (a new engine may take the name later)


class Proxy:
    """``/v1/completions`` and ``/v1/chat/completions`` handlers over a ``Gateway``."""

    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        self._idle = asyncio.Event()
        self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "completions", "/v1/completions")

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "chat", "/v1/chat/completions")

    async def _read(self, request: web.Request) -> bytes:
        lim = self.gw.limits
        limit = lim.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise GatewayError(f"request body exceeds {limit} bytes", status=413, code="request_too_large")
        try:
            # the whole body is here (most requests): no timer, no task to wait on
            if request.content.is_eof():
                return await request.read()
            return await asyncio.wait_for(request.read(), lim.body_timeout_s)
        except web.HTTPRequestEntityTooLarge:
            raise GatewayError(
                f"request body exceeds {limit} bytes", status=413, code="request_too_large"
            ) from None
        except TimeoutError:
            raise GatewayError(
                f"the request body took longer than {lim.body_timeout_s:g} s", status=408, code="timeout"
            ) from None

    async def _handle(self, request: web.Request, kind: str, path: str) -> web.StreamResponse:
        t0 = time.monotonic()
        gw = self.gw
        try:
            if gw.draining:
                raise GatewayError("the gateway is shutting down", status=503, error_type="server_error")
            if gw.requests_in_flight >= gw.limits.max_inflight:
                raise GatewayError(
                    f"the gateway holds {gw.limits.max_inflight} requests; retry later",
                    status=429,
                    error_type="rate_limit_error",
                    code="rate_limit_exceeded",
                )
            raw = await self._read(request)  # parsed even under overload: a refused request is demand
            req = parse_request(kind, raw)
            if req.model is not None and req.model != gw.model_name:
                raise GatewayError(
                    f"the model {req.model!r} does not exist; this gateway serves {gw.model_name!r}",
                    status=404,
                    error_type="invalid_request_error",
                    param="model",
                    code="model_not_found",
                )
            cap = gw.limits.max_prompt_tokens
            if cap is not None and req.prompt_tokens > cap:
                raise GatewayError(
                    f"the prompt has about {req.prompt_tokens} tokens; this gateway accepts at most {cap}",
                    param="prompt",
                    code="prompt_too_long",
                )
        except GatewayError as exc:
            gw.metrics.refuse(exc.status)
            return error_response(exc, self._retry_after() if exc.status == 429 else None)
        type_index, expected_output = gw.classifier.classify(req.prompt_tokens, req.max_tokens)
        gw.arrived(type_index)
        slo_class = gw.class_of(req.prompt_tokens, request.headers.get(CLASS_HEADER) or req.slo_class)
        gw.class_arrived(slo_class)
        entry = gw.ledger.arrived(req.prompt_tokens, expected_output)
        output_tokens = None
        tokens = req.prompt_tokens + expected_output
        # a prefix-aware router's view of the prompt: chained hashes of its 16-token blocks, as the engines hash
        prefix = prompt_hashes(req.prefix, ROUTER_BLOCK_TOKENS) if gw.table.uses_prefix else ()
        tried: set[tuple[str, str]] = set()  # (name, url): a switch may start a new engine under a name tried
        failures: list[str] = []
        gw.requests_in_flight += 1
        self._idle.clear()
        deadline = t0 + gw.limits.hold_timeout_s
        queue = gw.admission
        woken = False  # this request waited in the admission queue and was woken for a slot
        queue_refusal = None
        try:
            attempts = 0
            while attempts < gw.limits.max_attempts:
                table = gw.table  # re-read each attempt: a switch may have swapped it
                # others wait for a slot, or were woken to take one: go after them
                behind = (queue.queued or queue.woken) and not woken and not tried
                i = (
                    -1
                    if gw.paused is not None or behind
                    else table.pick(
                        type_index,
                        tokens,
                        _excluded(table, tried),
                        prefix if table.uses_prefix else (),
                    )
                )
                if i < 0:
                    if not tried and gw.paused is None and (queue.queued or queue.woken or table.saturated()):
                        queue_refusal = await self._queue(t0, front=woken)
                        if queue_refusal is None:
                            woken = True
                            continue
                        break
                    if self._should_hold(table, tried) and await self._hold(deadline):
                        continue
                    break
                attempts += 1
                decode = -1
                if table.roles[i] == "prefill":
                    decode = table.pick_decode(_excluded(table, tried))
                try:
                    if decode < 0:
                        resp, outcome = await self._single(request, table, i, path, raw, req, tokens, entry)
                    else:
                        resp, outcome = await self._pool(
                            request, table, i, decode, path, raw, req, tokens, entry
                        )
                except _Retry as exc:
                    load = exc.load
                    assert load is not None
                    tried.add((load.name, exc.url))
                    failures.append(f"{load.name}: {exc}")
                    gw.metrics.retries.labels("down" if exc.down else "5xx").inc()
                    if exc.down:
                        self._mark_down(load)
                    continue
                first_byte_s, tpot_s, output_tokens = outcome
                if output_tokens is not None:
                    gw.classifier.observe(req.prompt_tokens, output_tokens)
                ttft_s = None if first_byte_s is None else first_byte_s - t0
                e2e_s = time.monotonic() - t0
                gw.metrics.completed(type_index, e2e_s, ttft_s, tpot_s)
                if resp.status < 400:
                    gw.class_done(slo_class, req.prompt_tokens, e2e_s, ttft_s, tpot_s)
                if 400 <= resp.status < 500 and resp.status != 429:
                    gw.rejected(
                        type_index
                    )  # a request the engine rejects as invalid is no demand to plan for
                return resp
            return self._refusal(failures, queue_refusal)
        finally:
            gw.ledger.finished(entry, output_tokens)
            gw.requests_in_flight -= 1
            if gw.requests_in_flight == 0:
                self._idle.set()

    async def _single(
        self,
        request: web.Request,
        table: RouteTable,
        i: int,
        path: str,
        raw: bytes,
        req: GenerationRequest,
        tokens: float,
        entry: int,
    ) -> tuple[web.StreamResponse, _Outcome]:
        """One replica serves the request whole."""
        load, url = table.loads[i], table.urls[i]
        table.started(load, tokens)
        queue = self.gw.admission
        if queue.queued and table.free_slots() > queue.woken:  # room left no woken waiter takes: the next
            queue.release()
        self.gw.ledger.routed(entry, load.name)
        try:
            return await self._forward(request, url + path, raw, req, load)
        except _Retry as exc:
            exc.load, exc.url = load, url
            raise
        finally:
            self._finished(load, tokens)

    def _finished(self, load: ReplicaLoad, tokens: float) -> None:
        """A request left a replica: its slot goes to the oldest request waiting for one."""
        self.gw.table.finished(load, tokens)
        if self.gw.admission.queued:
            self.gw.admission.release()

    async def _pool(
        self,
        request: web.Request,
        table: RouteTable,
        i: int,
        d: int,
        path: str,
        raw: bytes,
        req: GenerationRequest,
        tokens: float,
        entry: int,
    ) -> tuple[web.StreamResponse, _Outcome]:
        """Prefill on replica ``i`` (one token, the KV kept for a remote decode), then decode on ``d``. The decode
        replica is held from the start (as the simulator reserves it before the copy): the router counts the
        request there, and a switch's drain waits for it rather than stop the replica mid-hand-off."""
        dload, durl = table.loads[d], table.urls[d]
        table.started(dload, tokens)
        try:
            one = replace(req, max_tokens=1, stream=False, include_usage=False)
            pre, _ = await self._single(
                request, table, i, path, prefill_body(raw), one, req.prompt_tokens + 1, entry
            )
            assert isinstance(pre, web.Response)
            if pre.status != 200:  # the prefill replica refused it (a 4xx): the client's answer
                return pre, (None, None, None)
            try:
                params = json.loads(pre.body).get("kv_transfer_params")  # type: ignore[arg-type]
            except (ValueError, AttributeError):
                params = None
            self.gw.metrics.kv_handoffs.inc()
            self.gw.ledger.routed(entry, dload.name)
            try:
                return await self._forward(request, durl + path, decode_body(raw, params), req, dload)
            except _Retry as exc:
                exc.load, exc.url = dload, durl
                raise
        finally:
            self._finished(dload, tokens)

    def _should_hold(self, table: RouteTable, tried: set[tuple[str, str]]) -> bool:
        """No replica to pick for an outage that should pass (a switch's gap, every untried replica down), not
        backpressure: wait for one rather than refuse."""
        if self.gw.paused is not None:
            return True
        return not table.saturated() and len(_excluded(table, tried)) < len(table.names)

    async def _queue(self, t0: float, *, front: bool) -> str | None:
        """Wait in the admission queue for a slot; None when woken, else why not (the queue is full, or the
        request waited ``queue_timeout_s``). A request that joins behind others while a replica has room wakes
        the oldest first (first come, first served); ``front``: woken but beaten to the slot, it keeps its place."""
        gw, queue = self.gw, self.gw.admission
        lim = gw.limits
        if not front and queue.full:
            if not queue.max_queued:  # no queue configured: refused at once, as before it existed
                return "every eligible replica is saturated"
            return f"every replica is full and {queue.queued} requests wait already"
        if not front and queue.queued and gw.table.free_slots() > queue.woken:
            queue.release()
        if await queue.wait(t0 + lim.queue_timeout_s - time.monotonic(), front=front):
            return None
        return f"every replica stayed full for {lim.queue_timeout_s:g} s"

    async def _hold(self, deadline: float) -> bool:
        """Wait for the routes to change or a replica to return, while the deadline and the queue allow."""
        gw = self.gw
        left = deadline - time.monotonic()
        if left <= 0 or gw.held >= gw.limits.max_held:
            return False
        gw.held += 1
        try:
            await gw.wait_for_routes(left)
        finally:
            gw.held -= 1
        return True

    def _mark_down(self, load: ReplicaLoad) -> None:
        table = self.gw.table
        i = table.index.get(load.name)
        if i is not None:
            table.mark_down(i, self.gw.limits.down_cooldown_s)

    async def _forward(
        self, request: web.Request, url: str, raw: bytes, req: GenerationRequest, load: ReplicaLoad
    ) -> tuple[web.StreamResponse, _Outcome]:
        """Send the body to one replica; its answer for the client, or ``_Retry`` before any byte went out."""
        # a task the prober cancels when it finds the replica hung (a non-streamed answer sends no byte until done);
        # awaited directly: no per-request wait() over a future shared by every request on the replica
        post = asyncio.ensure_future(self.gw.session.post(url, data=raw, headers=self.gw.upstream_headers))
        load.posts.add(post)
        try:
            up = await post
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():  # this request itself is cancelled (its client left)
                raise
            raise _Retry("stopped answering", down=True) from None
        except _UPSTREAM_ERRORS as exc:
            raise _Retry(_describe(exc), down=True) from None
        finally:
            load.posts.discard(post)
        clean = False
        load.active.add(up)
        try:
            if up.status >= 500:
                raise _Retry(f"HTTP {up.status}", down=False)
            if req.stream and up.status == 200:
                resp, outcome, clean = await self._stream(request, up, req, load)
                return resp, outcome
            try:
                body = await up.read()
            except _UPSTREAM_ERRORS as exc:
                raise _Retry(_describe(exc), down=True) from None
            clean = True
            output = None
            if up.status == 200:
                found = _COMPLETION_TOKENS.search(body)
                output = int(found.group(1)) if found else None
            headers = {
                "Content-Type": up.headers.get("Content-Type", "application/json"),
                REPLICA_HEADER: load.name,
            }
            return web.Response(body=body, status=up.status, headers=headers), (None, None, output)
        finally:
            load.active.discard(up)
            if clean:
                up.release()
            else:
                up.close()  # drop the connection: the replica aborts what it was generating

    async def _stream(
        self, request: web.Request, up: aiohttp.ClientResponse, req: GenerationRequest, load: ReplicaLoad
    ) -> tuple[web.StreamResponse, _Outcome, bool]:
        """Pipe an SSE stream through; the first upstream byte commits the request to this replica."""
        content = up.content
        try:
            first = await content.readany()
        except _UPSTREAM_ERRORS as exc:
            raise _Retry(_describe(exc), down=True) from None
        if not first:
            raise _Retry("closed the stream before its first byte", down=True)
        first_s = time.monotonic()
        down = web.StreamResponse(headers={**_SSE, REPLICA_HEADER: load.name})
        events, newline = first.count(b"\n\n"), first.endswith(b"\n")  # SSE events end with a blank line
        try:
            await down.prepare(request)
            await down.write(first)
            tail = first[-len(SSE_DONE) :]
            while True:
                failure = None
                try:
                    chunk = await content.readany()
                except _UPSTREAM_ERRORS as exc:
                    failure = _describe(exc)
                if failure is None and not chunk and not tail.endswith(SSE_DONE):
                    failure = "stopped answering" if load.missed_probes else "disconnected"
                if failure is not None:  # an end without [DONE] is a failure too (the prober cut it)
                    self.gw.metrics.stream_errors.inc()
                    self._mark_down(load)
                    error = GatewayError(
                        f"replica {load.name} failed mid-stream ({failure}); retry the request",
                        status=502,
                        error_type="server_error",
                        code="upstream_disconnected",
                    )
                    await down.write(sse_event(error_body(error)) + SSE_DONE)
                    await down.write_eof()
                    return down, (first_s, None, None), False
                if not chunk:
                    break
                events += chunk.count(b"\n\n") + (newline and chunk[:1] == b"\n")
                newline = chunk.endswith(b"\n")
                tail = (tail + chunk)[-len(SSE_DONE) :]
                await down.write(chunk)
            await down.write_eof()
        except ConnectionError:  # the client left; dropping the upstream connection aborts the generation
            return down, (first_s, None, None), False
        tokens = events - 1 - int(req.include_usage)  # less [DONE] and the usage chunk
        tpot_s = (time.monotonic() - first_s) / (tokens - 1) if tokens > 1 else None
        return down, (first_s, tpot_s, max(tokens, 0)), True

    def _retry_after(self) -> dict[str, str]:
        base = self.gw.limits.retry_after_s
        return {"Retry-After": str(base + random.randint(0, base))}  # jitter: refused clients spread out

    def _refusal(self, failures: list[str], queue_refusal: str | None = None) -> web.Response:
        gw = self.gw
        retry = self._retry_after()
        if failures:
            exc = GatewayError(
                "every replica tried failed: " + "; ".join(failures),
                status=502,
                error_type="server_error",
                code="upstream_failed",
            )
        elif queue_refusal is not None or gw.table.saturated():
            exc = GatewayError(
                f"{queue_refusal or 'every eligible replica is saturated'}; retry later",
                status=429,
                error_type="rate_limit_error",
                code="rate_limit_exceeded",
            )
        else:
            why = f" ({gw.paused})" if gw.paused is not None else ""
            exc = GatewayError(
                f"no replica is available{why}", status=503, error_type="server_error", code="unavailable"
            )
        gw.metrics.refuse(exc.status)
        return error_response(exc, retry)

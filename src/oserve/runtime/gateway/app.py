"""``make_gateway_app``: the gateway's HTTP surface — ``/v1/completions``, ``/v1/chat/completions`` (streaming
and not), ``/v1/models``, ``/health``, ``/metrics`` — and ``serve_gateway`` with a graceful drain."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from oserve.errors import GatewayError
from oserve.runtime.auth import bearer_matches
from oserve.runtime.gateway.gateway import Gateway
from oserve.runtime.gateway.proxy import Proxy
from oserve.runtime.server import error_response, serve_until_signal

__all__ = ["GATEWAY_KEY", "make_gateway_app", "serve_gateway"]

GATEWAY_KEY = web.AppKey("gateway", Gateway)
PROXY_KEY = web.AppKey("proxy", Proxy)
_POST_PATHS = ("/v1/completions", "/v1/chat/completions")
_GET_PATHS = ("/v1/models", "/health", "/metrics")


def make_gateway_app(
    gateway: Gateway, routes: Sequence[web.RouteDef] = (), *, api_key: str | None = None
) -> web.Application:
    """The aiohttp application serving ``gateway``; its upstream session opens and closes with the app.
    ``routes`` are served beside the API (``oserve serve`` adds its /admin endpoints). With ``api_key``, every
    ``/v1/*`` request needs ``Authorization: Bearer <api_key>`` (401 otherwise), as ``vllm serve --api-key``;
    ``/health`` and ``/metrics`` stay open for probes."""
    proxy = Proxy(gateway)
    created = int(time.time())

    @web.middleware
    async def authenticate(request: web.Request, handler):
        if api_key and request.path.startswith("/v1/") and not bearer_matches(request, api_key):
            exc = GatewayError(
                "invalid or missing API key: send 'Authorization: Bearer <key>'",
                status=401,
                error_type="authentication_error",
                code="invalid_api_key",
            )
            gateway.metrics.refuse(401)
            return error_response(exc, {"WWW-Authenticate": "Bearer"})
        return await handler(request)

    # the body limit is the gateway's own (a 413 with an OpenAI body); aiohttp's is set above it
    app = web.Application(
        client_max_size=gateway.limits.max_body_bytes + 1, middlewares=[authenticate] if api_key else []
    )
    app[GATEWAY_KEY] = gateway
    app[PROXY_KEY] = proxy

    async def models(request: web.Request) -> web.Response:
        card = {"id": gateway.model_name, "object": "model", "created": created, "owned_by": "oserve"}
        return web.json_response({"object": "list", "data": [card]})

    async def health(request: web.Request) -> web.Response:
        status, body = gateway.health()
        return web.json_response(body, status=status)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=gateway.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def fallback(request: web.Request) -> web.Response:
        """Unknown paths and wrong methods, as OpenAI-style error bodies."""
        if request.path in _POST_PATHS or request.path in _GET_PATHS:
            allowed = "POST" if request.path in _POST_PATHS else "GET"
            exc = GatewayError(
                f"{request.method} is not allowed on {request.path}; use {allowed}", status=405
            )
            return error_response(exc, {"Allow": allowed})
        return error_response(GatewayError(f"no route {request.path}", status=404, code="not_found"))

    app.router.add_post("/v1/completions", proxy.completions)
    app.router.add_post("/v1/chat/completions", proxy.chat)
    app.router.add_get("/v1/models", models, allow_head=False)
    app.router.add_get("/health", health, allow_head=False)
    app.router.add_get("/metrics", metrics, allow_head=False)
    app.router.add_routes(routes)
    app.router.add_route("*", "/{tail:.*}", fallback)

    async def _session(app: web.Application):
        await gateway.start()
        yield
        await gateway.close()

    app.cleanup_ctx.append(_session)
    return app


async def serve_gateway(
    app: web.Application,
    host: str,
    port: int,
    *,
    drain_timeout_s: float = 600.0,
    ready: Callable[[], None] | None = None,
) -> None:
    """Serve a gateway app until SIGTERM or SIGINT, then refuse new requests (503), finish those in flight (at
    most ``drain_timeout_s``) and return."""
    gateway, proxy = app[GATEWAY_KEY], app[PROXY_KEY]

    def drain() -> None:
        gateway.draining = True

    await serve_until_signal(
        app,
        host,
        port,
        start_draining=drain,
        wait_idle=proxy.wait_idle,
        drain_timeout_s=drain_timeout_s,
        ready=ready,
    )

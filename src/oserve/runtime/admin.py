"""``oserve serve``'s admin API: ``GET /admin/deployment``, ``POST /admin/deployment`` (``oserve deploy``: the
deployment is pinned, the controller holds it), ``POST /admin/deployment/release`` (``oserve deploy --release``)
and ``GET /admin/status``.

Off unless the serve has an admin token (``--admin-token`` / ``OSERVE_ADMIN_TOKEN``; then every call needs
``Authorization: Bearer <token>``, 401 otherwise) or runs with ``--insecure-admin`` (no check: trusted loopback
only); off, every admin path answers 403 saying how to turn it on. A posted deployment is read up to
``gateway.max_admin_body_bytes`` (413 beyond), parsed and validated in a worker thread (a large or deeply nested
body never stalls the requests the event loop serves) and every invalid body is a 400 naming the field.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import TYPE_CHECKING, Any

import yaml
from aiohttp import web

from oserve.errors import BackendError, GatewayError, OServeError, SpecError
from oserve.files import MAX_NESTING, bracket_depth
from oserve.runtime.auth import bearer_matches
from oserve.runtime.server import error_response
from oserve.spec import Deployment

if TYPE_CHECKING:
    from oserve.runtime.serve import Server

__all__ = ["AdminApi", "parse_deployment_body"]

log = logging.getLogger(__name__)

ADMIN_OFF = (
    "the admin API is off: start `oserve serve` with --admin-token (or OSERVE_ADMIN_TOKEN) and send "
    "'Authorization: Bearer <token>', or pass --insecure-admin on a trusted loopback"
)


_ENGINE_URL = re.compile(r"https?://[^\s/]+:\d+")  # an engine's address never leaves in an error body


def parse_deployment_body(raw: bytes) -> Deployment:
    """A posted deployment (YAML or JSON) validated; ``SpecError`` (a 400) names what is wrong. Runs in a
    worker thread: the YAML parser is pure Python."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"request body is not UTF-8 text (byte {exc.start})") from None
    if bracket_depth(raw)[0] > MAX_NESTING:  # refused at once: the YAML parser takes seconds to fail on it
        raise SpecError(f"request body is nested too deeply (more than {MAX_NESTING} levels)")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"request body is not YAML/JSON: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise SpecError("request body is nested too deeply") from None
    return Deployment.from_dict(data, "request body")


def _log_if_failed(task: asyncio.Future) -> None:
    """A switch whose caller left still ends; its failure goes to the log."""
    if not task.cancelled() and task.exception() is not None:
        log.warning("admin switch failed: %s", task.exception())


def _error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return error_response(GatewayError(message, status=status, error_type=kind), headers)


class AdminApi:
    """The admin routes of one ``Server``."""

    def __init__(self, server: Server) -> None:
        self.server = server
        g = server.config.gateway
        self.token = g.admin_token
        self.insecure = g.insecure_admin
        self.max_body_bytes = g.max_admin_body_bytes
        self.body_timeout_s = g.body_timeout_s

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/admin/deployment", self._guard(self._get_deployment), allow_head=False),
            web.post("/admin/deployment", self._guard(self._post_deployment)),
            web.post("/admin/deployment/release", self._guard(self._release)),
            web.get("/admin/status", self._guard(self._status), allow_head=False),
        ]

    def _guard(self, handler):
        async def guarded(request: web.Request) -> web.StreamResponse:
            if self.token:
                if not bearer_matches(request, self.token):
                    return _error(
                        401,
                        "authentication_error",
                        "admin endpoints need 'Authorization: Bearer <admin token>'",
                        {"WWW-Authenticate": "Bearer"},
                    )
            elif not self.insecure:
                return _error(403, "permission_error", ADMIN_OFF)
            return await handler(request)

        return guarded

    async def _read(self, request: web.Request) -> bytes | web.Response:
        limit = self.max_body_bytes
        too_big = _error(413, "invalid_request_error", f"a deployment body is at most {limit} bytes")
        if request.content_length is not None and request.content_length > limit:
            return too_big
        chunks: list[bytes] = []
        size = 0

        async def read() -> None:
            nonlocal size
            async for chunk in request.content.iter_any():
                size += len(chunk)
                if size > limit:
                    return
                chunks.append(chunk)

        try:
            await asyncio.wait_for(read(), self.body_timeout_s)
        except TimeoutError:
            return _error(408, "invalid_request_error", "the request body was not sent in time")
        return too_big if size > limit else b"".join(chunks)

    async def _get_deployment(self, request: web.Request) -> web.Response:
        orch = self.server.orchestrator
        current = orch.current()
        return web.json_response(
            {"deployment": current.to_dict() if current else None, "endpoints": orch.endpoints()}
        )

    async def _post_deployment(self, request: web.Request) -> web.Response:
        raw = await self._read(request)
        if isinstance(raw, web.Response):
            return raw
        loop = asyncio.get_running_loop()
        try:
            deployment = await loop.run_in_executor(None, parse_deployment_body, raw)
            # a caller that leaves (its handler is cancelled) must not stop a switch half-way
            switch = asyncio.ensure_future(self.server.apply(deployment))
            switch.add_done_callback(_log_if_failed)
            report = await asyncio.shield(switch)
        except BackendError as exc:
            return _error(502, "backend_error", _ENGINE_URL.sub("<engine>", str(exc)))
        except OServeError as exc:
            return _error(400, "invalid_request_error", str(exc))
        controller = self.server.controller
        pinned = controller.pinned if controller is not None else None
        return web.json_response({**report.to_dict(), "pinned": pinned})

    async def _release(self, request: web.Request) -> web.Response:
        return web.json_response({"released": self.server.release()})

    async def _status(self, request: web.Request) -> web.Response:
        server = self.server
        current = server.orchestrator.current()
        events = list(server.controller.events)[-50:] if server.controller is not None else []
        body: dict[str, Any] = {
            "model": server.model.name,
            "cluster": server.cluster.name,
            "backend": server.backend.name,
            "orchestrator": server.config.orchestrator.name,
            "deployment": current.describe() if current else None,
            "endpoints": server.orchestrator.endpoints(),
            "dead": await server.orchestrator.dead(),
            "health": server.gateway.health()[1] if server.gateway is not None else None,
            "pinned": server.controller.pinned if server.controller is not None else None,
            "controller": [e.to_dict() for e in events],
        }
        return web.json_response(body)

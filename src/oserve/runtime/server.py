"""Serving an aiohttp application until SIGTERM or SIGINT with a graceful drain: stop accepting connections, let
the requests in flight finish (bounded), then close. Shared by the emulated engine and the gateway."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from oserve.errors import ConfigError, GatewayError
from oserve.runtime.api import error_json
from oserve.runtime.listener import BurstAcceptSite

__all__ = ["error_response", "serve_until_signal", "start_site", "stop_signal"]


def error_response(exc: GatewayError, headers: dict[str, str] | None = None) -> web.Response:
    """The one OpenAI-style error answer (``{"error": {message, type, param, code}}``) of the gateway, the
    emulated engine and the admin API."""
    return web.Response(
        body=error_json(exc), status=exc.status, content_type="application/json", headers=headers
    )


@contextlib.asynccontextmanager
async def stop_signal() -> AsyncIterator[asyncio.Event]:
    """An event set by SIGTERM or SIGINT while the block runs (the handlers are removed after it)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def start_site(runner: web.AppRunner, host: str, port: int, **kwargs: object) -> web.TCPSite:
    """Listen on ``host:port``, accepting waiting connections in bursts (``BurstAcceptSite``); a port in use or
    an address this host lacks is one ``ConfigError`` line."""
    site = BurstAcceptSite(runner, host, port, **kwargs)  # type: ignore[arg-type]
    try:
        await site.start()
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ConfigError(
            f"cannot listen on {host}:{port}: {reason.lower()}; choose another --host/--port"
        ) from exc
    return site


async def serve_until_signal(
    app: web.Application,
    host: str,
    port: int,
    *,
    start_draining: Callable[[], None],
    wait_idle: Callable[[], Awaitable[None]],
    drain_timeout_s: float = 600.0,
    ready: Callable[[], None] | None = None,
    backlog: int = 4096,
) -> None:
    """Serve ``app`` on ``host:port``; on SIGTERM/SIGINT call ``start_draining()``, close the listening socket,
    await ``wait_idle()`` (at most ``drain_timeout_s``) and clean up. ``ready()`` is called once listening.
    A client that disconnects cancels its handler (``handler_cancellation``), so its generation is aborted."""
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=5.0, handler_cancellation=True)
    await runner.setup()
    try:
        site = await start_site(runner, host, port, reuse_address=True, backlog=backlog)
        async with stop_signal() as stop:
            if ready is not None:
                ready()
            await stop.wait()
            start_draining()
            await site.stop()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wait_idle(), drain_timeout_s)
    finally:
        await runner.cleanup()

"""``BurstAcceptSite``: connections that arrive at once while the server's event loop is saturated are all
accepted, on uvloop too (whose own servers accept about one per loop iteration then), over loopback sockets."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
from aiohttp import web

from oserve.runtime.server import start_site

HOT = 200  # keep-alive clients sending back to back: the server's loop never idles
LATE = 300  # connections opened at once while it is saturated
BURN_S = 0.002  # CPU per request on the server's loop
REQUEST = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"


def _loops() -> list:
    loops = [asyncio.new_event_loop]
    try:
        import uvloop
    except ImportError:
        return loops
    return [*loops, uvloop.new_event_loop]


def _burn(seconds: float) -> None:
    """Hold the event loop's thread busy for ``seconds`` (CPU, no await): a saturated server."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        continue


async def _busy(request: web.Request) -> web.Response:
    await request.read()
    _burn(BURN_S)
    return web.Response(text="ok")


async def _hot_clients(port: int, stop: asyncio.Event) -> None:
    async def one() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while not stop.is_set():
            writer.write(REQUEST)
            await reader.readuntil(b"ok")
        writer.close()

    await asyncio.gather(*(one() for _ in range(HOT)))


def _thread_loop(new_loop):
    loop = new_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    return loop, thread


@pytest.mark.parametrize("new_loop", _loops(), ids=lambda f: f.__module__.split(".")[0])
def test_connections_opened_while_the_loop_is_saturated_are_accepted(new_loop):
    loop, thread = _thread_loop(new_loop)
    clients, client_thread = _thread_loop(asyncio.new_event_loop)
    state: dict = {}

    async def serve() -> int:
        app = web.Application()
        app.router.add_post("/", _busy)
        state["runner"] = runner = web.AppRunner(app)
        await runner.setup()
        return (await start_site(runner, "127.0.0.1", 0, backlog=HOT + LATE + 64)).port

    port = asyncio.run_coroutine_threadsafe(serve(), loop).result(30)
    stop = asyncio.Event()
    hot = asyncio.run_coroutine_threadsafe(_hot_clients(port, stop), clients)
    late = []
    try:
        time.sleep(1.0)  # the hot clients are up: every loop iteration is busy
        for _ in range(LATE):  # each completes in the kernel's accept queue, then sends its request
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.sendall(REQUEST)
            late.append(s)
        answered = 0
        deadline = time.monotonic() + 10  # 300 x 2 ms of CPU is 0.6 s (plus the hot clients' share)
        for s in late:
            s.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                answered += s.recv(4096).startswith(b"HTTP/1.1 200")
            except TimeoutError:
                break
    finally:
        clients.call_soon_threadsafe(stop.set)
        hot.result(30)
        for s in late:
            s.close()
        asyncio.run_coroutine_threadsafe(state["runner"].cleanup(), loop).result(30)
        for lp, th in ((loop, thread), (clients, client_thread)):
            lp.call_soon_threadsafe(lp.stop)
            th.join(10)
            lp.close()
    # uvloop's own accept (aiohttp's TCPSite) answered 42 of the 300 here in 10 s: one accept per busy loop turn
    assert answered == LATE


def test_a_port_in_use_is_a_config_error():
    from oserve.errors import ConfigError

    async def go() -> None:
        holder = socket.create_server(("127.0.0.1", 0))
        runner = web.AppRunner(web.Application())
        await runner.setup()
        try:
            with pytest.raises(ConfigError, match="cannot listen"):
                await start_site(runner, "127.0.0.1", holder.getsockname()[1])
        finally:
            holder.close()
            await runner.cleanup()

    asyncio.run(go())

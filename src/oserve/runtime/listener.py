"""``BurstAcceptSite``: an aiohttp TCP site that accepts every waiting connection each time its listening socket is
ready (up to ``ACCEPT_BURST`` at once), as asyncio's own servers do, instead of uvloop's (libuv's) one.

Why: on uvloop a server whose event loop is saturated accepts about one connection per loop iteration. Measured
2026-12-02 with wrk opening 4,096 connections at once against ``oserve serve`` (``benchmarks/reliability.py
--client wrk``): ~2,500 of them sat in the kernel's accept queue for the whole 20 s level (``ss -ltn``: Recv-Q
2,528 -> 2,432, about 6 accepts a second; ``strace``: one ``accept4`` at a time, never run to ``EAGAIN``), so
those clients were never served; a toy aiohttp server on uvloop burning 1.5 ms per request showed the same, and
on asyncio's loop none waited. Accepting from our own listening socket (``loop.add_reader``) and handing each
connection to the loop (``connect_accepted_socket``) keeps uvloop's faster transports and drains the queue.
"""

from __future__ import annotations

import asyncio
import errno
import socket

from aiohttp import web

__all__ = ["ACCEPT_BURST", "BurstAcceptSite"]

ACCEPT_BURST = 1024  # connections accepted per readiness of the listening socket, at most
_RESOURCE_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_PAUSE_S = 1.0  # out of file descriptors: stop accepting this long (asyncio's servers do the same)


class _Listener:
    """The listening socket and its reader; what aiohttp's site holds as its server (``close``, ``sockets``)."""

    def __init__(self, sock: socket.socket, factory: web.Server) -> None:
        self._sock = sock
        self._factory = factory
        self._loop = asyncio.get_running_loop()
        self._pending: set[asyncio.Task] = set()  # connections being set up
        self._closed = False
        self.sockets = [sock]
        self._loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(ACCEPT_BURST):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno not in _RESOURCE_ERRNOS:
                    raise
                self._loop.remove_reader(self._sock.fileno())
                self._loop.call_later(_PAUSE_S, self._resume)
                return
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = self._loop.create_task(self._loop.connect_accepted_socket(self._factory, conn))
            self._pending.add(task)
            task.add_done_callback(self._connected)

    def _connected(self, task: asyncio.Task) -> None:
        self._pending.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a client that left while its connection was set up is no error

    def _resume(self) -> None:
        if not self._closed:
            self._loop.add_reader(self._sock.fileno(), self._accept)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()


class BurstAcceptSite(web.TCPSite):
    """``web.TCPSite`` whose connections are accepted in bursts (module docstring); same arguments."""

    async def start(self) -> None:
        if self._ssl_context is not None:  # not needed by OServe's servers: aiohttp's own path
            await super().start()
            return
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        host = self._host or "0.0.0.0"
        family = socket.getaddrinfo(host, self._port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        sock = socket.create_server((host, self._port), family=family, backlog=self._backlog)
        sock.setblocking(False)
        self._server = _Listener(sock, server)  # type: ignore[assignment]
        self._bound_port = sock.getsockname()[1]

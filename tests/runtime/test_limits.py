"""The gateway's limits come from the serve config, over real loopback HTTP: body size (413), a client that does
not send its body (408), the in-flight cap (429) and the listen backlog."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import aiohttp
import pytest
from serving import ServerThread, serve_config

ONE_GPU = {"cluster": "1x1xH100", "rates": "512:128=2"}


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory):
    overrides = {
        "gateway.max_body_bytes": 2048,
        "gateway.body_timeout_s": 0.5,
        "gateway.max_inflight": 2,
        "gateway.backlog": 333,
        "gateway.max_queued": 7,
        "gateway.queue_timeout_s": 1.5,
    }
    server = ServerThread(serve_config(tmp_path_factory.mktemp("limits"), **ONE_GPU, **overrides))
    yield server
    server.close()


def _post(url: str, body: dict) -> tuple[int, dict]:
    async def go() -> tuple[int, dict]:
        async with aiohttp.ClientSession() as http, http.post(f"{url}/v1/completions", json=body) as r:
            return r.status, await r.json()

    return asyncio.run(go())


def test_body_size_backlog_and_queue_come_from_the_config(limited: ServerThread):
    status, err = _post(limited.url, {"prompt": "x" * 4000, "max_tokens": 1})
    assert status == 413 and "2048" in err["error"]["message"]
    assert _post(limited.url, {"prompt": "x", "max_tokens": 1})[0] == 200
    (site,) = limited.server._runner.sites
    assert site._backlog == 333
    lim, queue = limited.server.gateway.limits, limited.server.gateway.admission
    assert (lim.max_queued, lim.queue_timeout_s, queue.max_queued) == (7, 1.5, 7)


def test_a_client_that_does_not_send_its_body_gets_a_408(limited: ServerThread, tmp_path: Path):
    port = limited.server.port
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{"
        )
        reply = sock.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 408"), reply


def test_beyond_the_in_flight_cap_requests_get_a_429(limited: ServerThread):
    async def go() -> list[int]:
        async with aiohttp.ClientSession() as http:
            long = {"prompt": "x", "max_tokens": 2000}

            async def one() -> int:
                async with http.post(f"{limited.url}/v1/completions", json=long) as r:
                    await r.read()
                    return r.status

            holders = [asyncio.create_task(one()) for _ in range(2)]
            while limited.server.gateway.requests_in_flight < 2:
                await asyncio.sleep(0.01)
            extra = await one()
            return [extra, *await asyncio.gather(*holders)]

    assert asyncio.run(go()) == [429, 200, 200]

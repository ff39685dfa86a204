"""Authentication over real loopback HTTP: the API key on ``/v1/*``, the admin token (and the admin API off
without one), the engines' per-serve secret, and error bodies that never show a replica's address."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import pytest
from rt_servers import async_test, deployment, engine_app, free_port, serving
from serving import ServerThread, serve_config

from oserve.runtime.auth import ENGINE_KEY_ENV
from oserve.runtime.config import ServeConfig
from oserve.runtime.engine.launch import EmulatedBackend
from oserve.runtime.gateway import Gateway, make_gateway_app
from oserve.runtime.serve import Server
from oserve.spec import ReplicaConfig, get_gpu
from oserve.spec.deployment import Replica

KEY, TOKEN = "sk-test-key", "admin-test-token"
ONE_GPU = {"cluster": "1x1xH100", "rates": "512:128=2"}


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory):
    """A one-replica serve with an API key and an admin token."""
    config = serve_config(
        tmp_path_factory.mktemp("auth"), **ONE_GPU, **{"gateway.api_key": KEY, "gateway.admin_token": TOKEN}
    )
    server = ServerThread(config)
    yield server
    server.close()


async def _get(
    url: str, headers: dict[str, str] | None = None, method: str = "GET", **kw
) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http, http.request(method, url, headers=headers, **kw) as r:
        return r.status, await r.json(content_type=None)


def _no_token(config: ServeConfig, **gateway: object) -> ServeConfig:
    """``config`` without an admin token (``merged`` skips None values)."""
    return config.model_copy(
        update={"gateway": config.gateway.model_copy(update={"admin_token": None, **gateway})}
    )


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_api_key_guards_v1_and_leaves_health_open(locked: ServerThread):
    url = locked.url
    body = {"prompt": "hi", "max_tokens": 2}
    for headers in (None, _bearer("wrong"), {"Authorization": KEY}, {"Authorization": f"Basic {KEY}"}):
        status, err = asyncio.run(_get(f"{url}/v1/completions", headers, "POST", json=body))
        assert status == 401 and err["error"]["type"] == "authentication_error", (headers, err)
    assert asyncio.run(_get(f"{url}/v1/models"))[0] == 401
    status, out = asyncio.run(_get(f"{url}/v1/completions", _bearer(KEY), "POST", json=body))
    assert status == 200 and out["usage"]["completion_tokens"] == 2
    assert asyncio.run(_get(f"{url}/health"))[0] == 200


def test_the_admin_token_is_separate_from_the_api_key(locked: ServerThread):
    url = f"{locked.url}/admin/status"
    for headers in (None, _bearer(KEY), _bearer(TOKEN + "x")):
        status, err = asyncio.run(_get(url, headers))
        assert status == 401 and "admin" in err["error"]["message"]
    status, out = asyncio.run(_get(url, _bearer(TOKEN)))
    assert status == 200 and out["backend"] == "emulated"
    # a switch needs the token too; without it nothing is applied
    status, _ = asyncio.run(_get(f"{locked.url}/admin/deployment", None, "POST", data="model: x"))
    assert status == 401


def test_engines_refuse_requests_that_do_not_come_through_the_gateway(locked: ServerThread):
    (engine,) = locked.server.orchestrator.endpoints().values()
    body = {"prompt": "hi", "max_tokens": 2}
    assert asyncio.run(_get(f"{engine}/v1/completions", None, "POST", json=body))[0] == 401
    assert asyncio.run(_get(f"{engine}/v1/completions", _bearer(KEY), "POST", json=body))[0] == 401
    assert engine.startswith("http://127.0.0.1:")  # engines bind loopback


def test_without_a_token_the_admin_api_is_off_unless_insecure(tmp_path: Path):
    off = ServerThread(_no_token(serve_config(tmp_path / "off", **ONE_GPU)))
    try:
        status, err = asyncio.run(_get(f"{off.url}/admin/status"))
        assert status == 403 and "--admin-token" in err["error"]["message"]
        status, _ = asyncio.run(_get(f"{off.url}/admin/deployment", None, "POST", data="{}"))
        assert status == 403
    finally:
        off.close()
    open_ = ServerThread(_no_token(serve_config(tmp_path / "open", **ONE_GPU), insecure_admin=True))
    try:
        assert asyncio.run(_get(f"{open_.url}/admin/status"))[0] == 200
    finally:
        open_.close()


def test_binding_beyond_loopback_without_keys_warns(tmp_path: Path):
    config = serve_config(tmp_path, **ONE_GPU, **{"gateway.host": "0.0.0.0", "gateway.insecure_admin": True})
    warnings = Server(_no_token(config)).exposure_warnings()
    assert any("--api-key" in w for w in warnings) and any("admin" in w for w in warnings)
    assert Server(config.merged({"gateway.host": "127.0.0.1"})).exposure_warnings() == []
    keyed = config.merged({"gateway.api_key": KEY, "gateway.admin_token": TOKEN})
    assert Server(keyed).exposure_warnings() == []


def test_the_engine_secret_travels_in_the_environment_and_is_masked_in_logs():
    replica = Replica(ReplicaConfig(get_gpu("H100")), (0,), "r0")
    launch = EmulatedBackend("llama-3-8b", api_key="s3cret").launch(
        replica, port=9, host="127.0.0.1", device_ids=[0]
    )
    assert launch.env == {ENGINE_KEY_ENV: "s3cret"}
    assert "s3cret" not in " ".join(launch.argv) and "s3cret" not in launch.describe()


@async_test
async def test_gateway_errors_never_show_replica_addresses():
    async with AsyncExitStack() as stack:
        port = free_port()
        gw = Gateway(deployment(["r0"]), {"r0": f"http://127.0.0.1:{port}"})
        url = await stack.enter_async_context(serving(make_gateway_app(gw)))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        async with http.post(f"{url}/v1/completions", json={"prompt": "x", "max_tokens": 2}) as r:
            text = await r.text()
            assert r.status in (502, 503), text
        assert str(port) not in text and "127.0.0.1" not in text


@async_test
async def test_a_keyed_engine_serves_the_gateway_that_holds_its_key():
    async with AsyncExitStack() as stack:
        engine = await stack.enter_async_context(serving(engine_app(api_key="k")))
        gw = Gateway(deployment(["r0"]), {"r0": engine}, upstream_api_key="k")
        url = await stack.enter_async_context(serving(make_gateway_app(gw, api_key=KEY)))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        body = {"prompt": "x", "max_tokens": 2}
        async with http.post(f"{url}/v1/completions", json=body, headers=_bearer(KEY)) as r:
            assert r.status == 200
        async with http.post(f"{engine}/v1/completions", json=body) as r:
            assert r.status == 401

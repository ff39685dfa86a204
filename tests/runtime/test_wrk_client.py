"""``benchmarks/reliability_wrk.py``: the bodies its wrk script POSTs are requests the gateway answers 200 with the
asked-for tokens (over real loopback HTTP), and, where wrk is installed, a short run counts them as good answers
and a wrong API key as errors."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from pathlib import Path

import aiohttp
import pytest
from serving import ServerThread, serve_config

_DIR = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(_DIR))
_SPEC = importlib.util.spec_from_file_location("reliability_wrk", _DIR / "reliability_wrk.py")
wrk = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(wrk)

KEY = "sk-wrk-test"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory):
    config = serve_config(
        tmp_path_factory.mktemp("wrk"), cluster="1x1xH100", rates="512:128=2", **{"gateway.api_key": KEY}
    )
    server = ServerThread(config)
    yield server
    server.close()


def test_the_scripts_bodies_are_answered_200_with_the_tokens_asked(keyed: ServerThread):
    async def go() -> list[tuple[int, str]]:
        headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
        async with aiohttp.ClientSession(headers=headers) as http:
            out = []
            for body in wrk.WRK_BODIES:
                async with http.post(f"{keyed.url}/v1/completions", data=body) as r:
                    out.append((r.status, await r.text()))
            return out

    (s_stream, streamed), (s_plain, plain) = asyncio.run(go())
    assert s_stream == 200 and s_plain == 200
    events = [line for line in streamed.splitlines() if line.startswith("data: ")]
    assert len(events) == wrk.TOKENS + 1 and events[-1] == "data: [DONE]"
    assert json.loads(plain)["usage"]["completion_tokens"] == wrk.TOKENS
    script = wrk.lua_script(KEY)
    assert all(f"[[{b}]]" in script for b in wrk.WRK_BODIES) and f"Bearer {KEY}" in script


@pytest.mark.skipif(wrk.wrk_path() is None, reason="wrk is not installed")
def test_a_short_wrk_run_counts_good_answers_and_refusals(keyed: ServerThread):
    good = wrk.run_wrk(keyed.url, KEY, clients=8, seconds=2, warmup_s=1)
    assert good["ok"] > 20 and good["errors"] == 0 and good["requests"] == good["ok"]
    assert good["p50_s"] > 0 and good["client_cpu_s"] > 0
    refused = wrk.run_wrk(keyed.url, "wrong-key", clients=2, seconds=1)
    assert refused["ok"] == 0 and refused["error_kinds"].get("status 401", 0) == refused["requests"] > 0

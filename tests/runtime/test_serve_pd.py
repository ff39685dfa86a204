"""``oserve serve`` switching an aggregated replica into a prefill/decode pair and back, under a replayed trace
slice, with emulated engines on loopback: zero requests lost, and the pool really serves in between."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aiohttp
import pytest
from rt_servers import metric_value
from serving import ADMIN, ServerThread, serve_config, trace_slice

from oserve.runtime.loadgen import run_load, summarise
from oserve.spec import Deployment, Replica, ReplicaConfig, get_gpu

H100 = get_gpu("H100")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """llama-3-8b on 1x4xH100, planned from the default rates (4 x TP1)."""
    os.environ["PYTHONPATH"] = (
        f"{Path(__file__).resolve().parents[2] / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    )
    server = ServerThread(serve_config(tmp_path_factory.mktemp("serve-pd")))
    yield server
    server.close()


def deployment(*shapes: tuple[str, tuple[int, ...], str]) -> dict:
    replicas = tuple(Replica(ReplicaConfig(H100, role=role), g, n) for n, g, role in shapes)  # type: ignore[arg-type]
    return Deployment("llama-3-8b", replicas).to_dict()


def test_zero_requests_lost_when_a_pd_pair_is_switched(served: ServerThread, shared_traces: Path):
    assert served.report.deployment.describe() == "4 x H100-SXM-80GB:tp1"
    # 4 x TP1 -> r0, r1 + a P/D pair on GPUs 2, 3 -> 4 x TP1 again, under a trace slice replayed at 4x its pace
    requests = trace_slice(shared_traces, 60, start=200, time_scale=4.0)
    pool = deployment(
        ("r0", (0,), "aggregated"),
        ("r1", (1,), "aggregated"),
        ("p0", (2,), "prefill"),
        ("d0", (3,), "decode"),
    )
    back = deployment(
        ("r0", (0,), "aggregated"), ("r1", (1,), "aggregated"), ("a2", (2,), "aggregated"),
        ("a3", (3,), "aggregated"),
    )  # fmt: skip
    gw = served.server.gateway

    async def scenario():
        switched = asyncio.Event()
        load = asyncio.create_task(run_load(served.url, "llama-3-8b", requests, until=switched))
        reports, handoffs = [], []
        async with aiohttp.ClientSession() as session:
            for target in (pool, back):
                await asyncio.sleep(0.5)
                async with session.post(f"{served.url}/admin/deployment", json=target, headers=ADMIN) as resp:
                    assert resp.status == 200, await resp.text()
                    reports.append(await resp.json())
                if target is pool:  # serve on the pair a while: the pool must take its share of the load
                    before = gw.metrics.kv_handoffs._value.get()
                    await asyncio.sleep(2.0)
                    handoffs.append(gw.metrics.kv_handoffs._value.get() - before)
                    async with session.get(f"{served.url}/metrics") as resp:
                        handoffs.append(metric_value(await resp.text(), "oserve_gateway_kv_handoffs_total"))
                    decode_url = served.server.orchestrator.endpoints()["d0"]
                    async with session.get(f"{decode_url}/metrics") as resp:  # the engine process itself
                        text = await resp.text()
                    assert metric_value(text, "oserve:engine_role", role="decode") == 1
                    handoffs.append(metric_value(text, "oserve:kv_transfers_received_total"))
        switched.set()
        return await load, reports, handoffs

    outcomes, reports, handoffs = asyncio.run(scenario())
    summary = summarise(outcomes)
    print(
        f"P/D switch: {summary['requests']} sent, {summary['ok']} ok, {summary['failed']} lost; "
        f"{handoffs[1]:.0f} KV hand-offs; steps {[r['steps'] for r in reports]}"
    )
    assert len(outcomes) >= 2 * len(requests)
    assert summary["failed"] == 0, summary["errors"]
    assert handoffs[0] > 0  # requests went prefill -> decode while the pair served
    assert handoffs[2] > 0  # and the decode engine process received the KV hand-offs (its own counter)
    to_pool, to_back = reports
    assert set(to_pool["kept"]) == {"r0", "r1"} and set(to_pool["started"]) == {"p0", "d0"}
    assert set(to_pool["stopped"]) == {"r2", "r3"}
    assert set(to_back["kept"]) == {"r0", "r1"} and set(to_back["stopped"]) == {"p0", "d0"}
    for report in reports:
        assert not report["drain_timeouts"]
    final = served.server.orchestrator.current()
    assert final.describe() == "4 x H100-SXM-80GB:tp1" and not final.disaggregated
    assert gw.inflight("p0") == gw.inflight("d0") == 0

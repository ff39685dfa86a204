"""``oserve serve`` end to end on loopback with emulated replicas: a real trace slice through the gateway, a switch
to another TP mix under load, a replica killed mid-stream, and manual control over the admin API."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import aiohttp
import pytest
from serving import ADMIN, ServerThread, serve_config, trace_slice

from oserve.runtime.loadgen import LoadRequest, run_load, summarise
from oserve.spec import Deployment, Replica, ReplicaConfig, get_gpu

H100 = get_gpu("H100")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """One serve for the module: llama-3-8b on 1x4xH100, planned from the default rates (4 x TP1)."""
    os.environ["PYTHONPATH"] = (
        f"{Path(__file__).resolve().parents[2] / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    )
    server = ServerThread(serve_config(tmp_path_factory.mktemp("serve")))
    yield server
    server.close()


def deployment(*shapes: tuple[str, int, tuple[int, ...]]) -> dict:
    return Deployment(
        "llama-3-8b", tuple(Replica(ReplicaConfig(H100, tp=tp), g, n) for n, tp, g in shapes)
    ).to_dict()


def test_trace_slice_through_the_gateway_every_request_completes(served: ServerThread, shared_traces: Path):
    assert served.report.deployment.describe() == "4 x H100-SXM-80GB:tp1"
    requests = trace_slice(shared_traces, 80)
    assert sum(r.stream for r in requests) == 40 and sum(r.chat for r in requests) > 20
    outcomes = asyncio.run(run_load(served.url, "llama-3-8b", requests))
    summary = summarise(outcomes)
    assert summary["failed"] == 0, summary["errors"]
    # the gateway typed and counted every arrival
    counts = served.server.gateway.observed_counts()
    assert sum(counts.values()) >= 80


def test_switch_under_load_loses_nothing(served: ServerThread, shared_traces: Path):
    # a trace slice replayed at 4x its pace, over and over until both switches are done and one more pass:
    # 4 x TP1 -> TP2 + 2 x TP1 -> 2 x TP2
    requests = trace_slice(shared_traces, 60, start=100, time_scale=4.0)
    targets = [
        deployment(("r0", 1, (0,)), ("r1", 1, (1,)), ("w0", 2, (2, 3))),
        deployment(("w1", 2, (0, 1)), ("w0", 2, (2, 3))),
    ]

    async def scenario():
        switched = asyncio.Event()
        load = asyncio.create_task(run_load(served.url, "llama-3-8b", requests, until=switched))
        reports = []
        async with aiohttp.ClientSession() as session:
            for target in targets:
                await asyncio.sleep(0.5)
                async with session.post(f"{served.url}/admin/deployment", json=target, headers=ADMIN) as resp:
                    assert resp.status == 200, await resp.text()
                    reports.append(await resp.json())
        switched.set()
        return await load, reports

    outcomes, reports = asyncio.run(scenario())
    assert len(outcomes) >= 2 * len(requests)
    summary = summarise(outcomes)
    assert summary["failed"] == 0, summary["errors"]
    first, second = reports
    assert set(first["kept"]) == {"r0", "r1"} and first["started"] == ["w0"]
    assert set(first["stopped"]) == {"r2", "r3"}
    assert second["kept"] == ["w0"] and second["started"] == ["w1"]
    for report in reports:
        print(f"switch converged in {report['converge_s']:.2f} s: {report['steps']}")
        assert report["gap_s"] == 0 and not report["drain_timeouts"]
        # a started replica is routed only after it is healthy, and old ones stop only after the new are routed
        actions = [s["action"] for s in report["steps"]]
        assert actions and set(actions) <= {"start", "stop"}
    assert served.server.orchestrator.current().describe() == "2 x H100-SXM-80GB:tp2"


def retries(url: str) -> float:
    """The gateway's ``oserve_gateway_retries_total`` over every reason, from its /metrics."""

    async def read() -> str:
        async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as resp:
            return await resp.text()

    text = asyncio.run(read())
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("oserve_gateway_retries_total")
    )


def wait_restored(served: ServerThread, name: str, old_pid: int, timeout_s: float = 60.0) -> None:
    orch = served.server.orchestrator
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        engine = orch._engines.get(name)
        if engine is not None and engine.process.pid != old_pid and served.call(orch.dead()) == []:
            return
        time.sleep(0.1)
    raise AssertionError(f"replica {name} not restored")


def test_dead_replica_requests_not_started_are_retried_elsewhere(served: ServerThread):
    orch = served.server.orchestrator
    victim = orch.current().replicas[0].name
    old_pid = orch._engines[victim].process.pid
    before = retries(served.url)

    async def hold():
        await orch._lock.acquire()

    # hold the orchestrator's lock (as an apply would) so the health watch cannot route around the dead replica
    # before the burst arrives: the gateway still sends it requests, gets refused, and retries them elsewhere
    served.call(hold())
    try:
        os.kill(old_pid, signal.SIGKILL)
        while orch._engines[victim].process.alive():
            time.sleep(0.01)
        burst = [LoadRequest(0.0, 32, 8, stream=i % 2 == 0) for i in range(16)]
        outcomes = asyncio.run(run_load(served.url, "llama-3-8b", burst))
    finally:
        served.loop.call_soon_threadsafe(orch._lock.release)
    assert summarise(outcomes)["failed"] == 0, summarise(outcomes)["errors"]
    assert retries(served.url) > before
    wait_restored(served, victim, old_pid)


def test_killed_replica_mid_stream_error_event_and_restore(served: ServerThread):
    orch = served.server.orchestrator
    victim = orch.current().replicas[0].name
    old_pid = orch._engines[victim].process.pid
    long = LoadRequest(0.0, 64, 2000, stream=True)  # ~0.7 s each at 20x: still streaming when the kill comes

    async def scenario():
        streams = asyncio.create_task(run_load(served.url, "llama-3-8b", [long] * 8))
        gw = served.server.gateway
        for _ in range(200):
            if gw.inflight(victim) > 0:
                break
            await asyncio.sleep(0.01)
        assert gw.inflight(victim) > 0
        await asyncio.sleep(0.1)  # past the first byte: no retry can hide the failure now
        os.kill(old_pid, signal.SIGKILL)
        burst = [LoadRequest(0.0, 32, 8, stream=i % 2 == 0) for i in range(12)]
        after = await run_load(served.url, "llama-3-8b", burst)
        return await streams, after

    streamed, after = asyncio.run(scenario())
    assert summarise(after)["failed"] == 0, summarise(after)["errors"]
    broken = [o for o in streamed if not o.ok]
    assert broken, "no stream was on the killed replica"
    for o in broken:  # the stream in flight ends with a clear error event, not a silent cut
        assert o.status == 200 and "failed mid-stream" in (o.error or "")
    # the controller's health watch restarts the replica on its GPUs
    wait_restored(served, victim, old_pid)
    events = [e for e in served.server.controller.events if e.kind == "restore"]
    assert events and events[-1].detail["replica"] == victim
    ok = asyncio.run(run_load(served.url, "llama-3-8b", [LoadRequest(0.0, 16, 4, stream=False)] * 8))
    assert summarise(ok)["failed"] == 0


def test_admin_api_rejects_bad_deployments_and_reports_status(served: ServerThread):
    async def scenario():
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{served.url}/admin/deployment", data="replicas: [", headers=ADMIN
            ) as resp:
                assert resp.status == 400 and "YAML" in (await resp.json())["error"]["message"]
            too_big = deployment(("r9", 8, tuple(range(8))))
            async with session.post(f"{served.url}/admin/deployment", json=too_big, headers=ADMIN) as resp:
                body = await resp.json()
                assert resp.status == 400 and "not in cluster" in body["error"]["message"], body
            other = {**deployment(("x", 1, (0,))), "model": "llama-2-70b"}
            async with session.post(f"{served.url}/admin/deployment", json=other, headers=ADMIN) as resp:
                assert resp.status == 400 and "not the model" in (await resp.json())["error"]["message"]
            async with session.get(f"{served.url}/admin/status", headers=ADMIN) as resp:
                status = await resp.json()
        return status

    status = asyncio.run(scenario())
    assert status["backend"] == "emulated" and status["dead"] == []
    assert set(status["endpoints"]) == {r.name for r in served.server.orchestrator.current().replicas}

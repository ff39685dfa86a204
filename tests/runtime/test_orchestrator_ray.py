"""The Ray orchestrator on a real local Ray (CPU, eight logical GPUs): one actor per replica in a STRICT_PACK
placement group, engines launched by the actors, GPUs handed back on stop, a dead engine restored."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import aiohttp
import pytest

from oserve.runtime.engine.launch import EmulatedBackend
from oserve.spec import Deployment, Replica, ReplicaConfig, get_gpu, get_model, parse_cluster

pytestmark = pytest.mark.ray

H100 = get_gpu("H100")


def dep(*shapes: tuple[str, int, tuple[int, ...]]) -> Deployment:
    return Deployment("llama-3-8b", tuple(Replica(ReplicaConfig(H100, tp=tp), g, n) for n, tp, g in shapes))


async def complete(url: str, max_tokens: int = 16) -> int:
    async with aiohttp.ClientSession() as session:
        body = {"model": "llama-3-8b", "prompt": "hello " * 32, "max_tokens": max_tokens}
        async with session.post(f"{url}/v1/completions", json=body) as resp:
            assert resp.status == 200
            return (await resp.json())["usage"]["completion_tokens"]


async def free_gpus(ray, expected: float) -> float:
    """Ray's free GPU count once it settles on ``expected`` (placement groups are removed asynchronously)."""
    for _ in range(100):
        free = ray.available_resources().get("GPU", 0)
        if free == expected:
            break
        await asyncio.sleep(0.05)
    return free


def test_ray_orchestrator_places_switches_and_restores(ray_runtime, tmp_path: Path):
    from oserve.runtime.orchestrator import make_orchestrator

    ray = ray_runtime
    orch = make_orchestrator(
        "ray",
        EmulatedBackend("llama-3-8b", speed=50),
        model=get_model("llama-3-8b"),
        cluster=parse_cluster("1x8xH100"),
        log_dir=tmp_path,
    )

    async def scenario() -> None:
        report = await orch.apply(dep(("r0", 2, (0, 1)), ("r1", 1, (2,)), ("r2", 1, (3,))))
        assert set(report.started) == {"r0", "r1", "r2"}
        engines = orch._engines
        # each actor holds its own logical GPUs: 2 + 1 + 1 of the 8, none shared
        devices = {n: e.devices for n, e in engines.items()}
        assert sorted(len(d) for d in devices.values()) == [1, 1, 2]
        assert len({g for d in devices.values() for g in d}) == 4
        assert await free_gpus(ray, 4) == 4
        for url in orch.endpoints().values():
            assert await complete(url) == 16

        # switch: r1 and r2 merge into a TP2; r0 is kept, untouched
        kept_url = orch.endpoints()["r0"]
        report = await orch.apply(dep(("r0", 2, (0, 1)), ("big", 2, (2, 3))))
        assert report.kept == ("r0",) and report.started == ("big",) and set(report.stopped) == {"r1", "r2"}
        assert orch.endpoints()["r0"] == kept_url
        assert await complete(orch.endpoints()["big"]) == 16
        assert await free_gpus(ray, 4) == 4

        # fault: the engine process behind "big" dies; the orchestrator sees it and restarts it in place
        os.kill(engines["big"].pid, signal.SIGKILL)
        for _ in range(100):
            if await orch.dead() == ["big"]:
                break
            await asyncio.sleep(0.05)
        assert await orch.dead() == ["big"]
        await orch.restore("big")
        assert await orch.dead() == []
        assert await complete(orch.endpoints()["big"]) == 16

        await orch.shutdown()
        assert await free_gpus(ray, 8) == 8

    asyncio.run(scenario())

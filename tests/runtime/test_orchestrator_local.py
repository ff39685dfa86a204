"""The local orchestrator's failure paths with real processes: an engine that cannot launch or dies at start,
and an apply cancelled half-way, leave nothing running."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from oserve.errors import BackendError, ConfigError
from oserve.runtime.engine.launch import EmulatedBackend
from oserve.runtime.engine.vllm import VllmBackend
from oserve.runtime.orchestrator import LocalOrchestrator, make_orchestrator
from oserve.spec import Deployment, Replica, ReplicaConfig, get_gpu, get_model, parse_cluster

H100 = get_gpu("H100")
ONE = Deployment("llama-3-8b", (Replica(ReplicaConfig(H100), (0,), "r0"),))


def test_registry_and_one_machine_only(tmp_path: Path):
    backend = EmulatedBackend("llama-3-8b")
    assert isinstance(make_orchestrator("local", backend, log_dir=tmp_path), LocalOrchestrator)
    with pytest.raises(ConfigError, match="choose one of local, ray"):
        make_orchestrator("k8s", backend)
    with pytest.raises(ConfigError, match="use --orchestrator ray"):
        LocalOrchestrator(backend, cluster=parse_cluster("2x8xH100"))


def test_missing_engine_binary_is_a_backend_error(tmp_path: Path):
    orch = LocalOrchestrator(VllmBackend("m", executable=str(tmp_path / "no-vllm")), log_dir=tmp_path)
    with pytest.raises(BackendError, match="cannot launch"):
        asyncio.run(orch.apply(ONE))
    assert orch.current() is None and orch.endpoints() == {}


def test_engine_dying_at_start_names_its_log(tmp_path: Path):
    orch = LocalOrchestrator(EmulatedBackend("no-such-model"), log_dir=tmp_path)
    with pytest.raises(BackendError, match=r"exited before it was healthy.*unknown model"):
        asyncio.run(orch.apply(ONE))
    assert orch.current() is None


def test_deployment_for_another_model_or_off_the_cluster_is_refused(tmp_path: Path):
    orch = LocalOrchestrator(
        EmulatedBackend("llama-3-8b"), model=get_model("llama-3-8b"), cluster=parse_cluster("1x4xH100")
    )
    with pytest.raises(ConfigError, match="not the model"):
        asyncio.run(orch.apply(Deployment("llama-2-70b", ONE.replicas)))
    off = Deployment("llama-3-8b", (Replica(ReplicaConfig(H100), (7,), "r0"),))
    with pytest.raises(ConfigError, match="does not fit cluster"):
        asyncio.run(orch.apply(off))


def test_cancelled_apply_stops_what_it_launched(tmp_path: Path):
    orch = LocalOrchestrator(EmulatedBackend("llama-3-8b"), log_dir=tmp_path)
    two = Deployment(
        "llama-3-8b", (Replica(ReplicaConfig(H100), (0,), "a"), Replica(ReplicaConfig(H100), (1,), "b"))
    )
    processes = []

    async def scenario() -> None:
        launch = orch._launch

        async def spy(replica):
            engine = await launch(replica)
            processes.append(engine.process)
            return engine

        orch._launch = spy
        task = asyncio.create_task(orch.apply(two))
        while len(processes) < 2:
            await asyncio.sleep(0.01)
        task.cancel()  # mid-start: the engines are launched, not yet healthy
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert len(processes) == 2 and not any(p.alive() for p in processes)
    assert orch.current() is None

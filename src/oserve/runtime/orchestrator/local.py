"""The local orchestrator: each replica's engine is a process on this machine, on a free port, logging to a file,
pinned to the replica's GPUs (their local indices on the one node) and stopped with SIGTERM, then SIGKILL."""

from __future__ import annotations

import itertools
from pathlib import Path

from oserve.errors import ConfigError
from oserve.runtime.engine.launch import EngineBackend
from oserve.runtime.engine.process import EngineProcess, free_port
from oserve.runtime.engine.vllm import wait_healthy
from oserve.runtime.orchestrator.base import RouteSink
from oserve.runtime.orchestrator.managed import ManagedOrchestrator
from oserve.spec import Cluster, ModelSpec, Replica

__all__ = ["LocalEngine", "LocalOrchestrator"]


class LocalEngine:
    """An ``EngineProcess`` listening at ``url``."""

    def __init__(self, process: EngineProcess, url: str) -> None:
        self.process = process
        self.url = url

    async def wait_ready(self, timeout_s: float) -> float:
        return await wait_healthy(
            self.url, timeout_s=timeout_s, alive=self.process.alive, describe=self.process.log_tail
        )

    async def alive(self) -> bool:
        return self.process.alive()

    async def stop(self, grace_s: float) -> None:
        await self.process.stop(grace_s)


class LocalOrchestrator(ManagedOrchestrator):
    """Engines as local processes. One node: a cluster of several nodes needs the ``ray`` orchestrator."""

    name = "local"

    def __init__(
        self,
        backend: EngineBackend,
        *,
        model: ModelSpec | None = None,
        cluster: Cluster | None = None,
        router: RouteSink | None = None,
        log_dir: Path | str = "oserve-logs",
        host: str = "127.0.0.1",
        drain_timeout_s: float = 60.0,
        stop_grace_s: float = 30.0,
        min_serving_fraction: float = 0.5,
    ) -> None:
        if cluster is not None and len(cluster.nodes) > 1:
            raise ConfigError(
                f"the local orchestrator runs one machine, but cluster {cluster.name} has {len(cluster.nodes)} "
                "nodes; use --orchestrator ray"
            )
        super().__init__(
            backend,
            model=model,
            cluster=cluster,
            router=router,
            drain_timeout_s=drain_timeout_s,
            stop_grace_s=stop_grace_s,
            min_serving_fraction=min_serving_fraction,
        )
        self.log_dir = Path(log_dir)
        self.host = host
        self._launches = itertools.count()

    def device_ids(self, replica: Replica) -> list[int]:
        """The replica's GPUs as this machine numbers them (``CUDA_VISIBLE_DEVICES``), in the replica's order."""
        if self.cluster is None:
            return list(replica.gpu_ids)
        return [self.cluster.gpus[g].local_index for g in replica.gpu_ids]

    async def _launch(self, replica: Replica) -> LocalEngine:
        port = free_port(self.host)
        launch = self.backend.launch(replica, port=port, host=self.host, device_ids=self.device_ids(replica))
        log = self.log_dir / f"{replica.name}-{next(self._launches)}.log"
        connect = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return LocalEngine(EngineProcess(launch, log), f"http://{connect}:{port}")

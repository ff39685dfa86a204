"""The Ray orchestrator: one actor per replica, owning its engine process; GPUs are Ray resources.

Each replica gets a placement group of one bundle of ``tp x pp`` GPUs with ``STRICT_PACK``, so its GPUs (and so its
TP groups) sit on one node; the actor holds that bundle with ``num_cpus=0`` (a GPU-only bundle has no CPU to give)
and runs the same engine command as the local orchestrator, with ``CUDA_VISIBLE_DEVICES`` set to the GPUs Ray
assigned it. Ray chooses which GPUs: the deployment's GPU ids fix the shape and the count, not the device.
Stopping a replica stops its engine (SIGTERM, then SIGKILL), then the actor and its placement group, so the GPUs
are free for the next wave. Needs the ``ray`` extra; ``ray.init`` joins ``address`` (``auto`` for a ``ray start``
cluster) or starts a local Ray (with ``num_gpus`` logical GPUs when given: ``oserve serve`` gives the cluster's for
emulated engines).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from pathlib import Path
from typing import Any

from oserve.errors import BackendError, ConfigError
from oserve.runtime.engine.launch import EngineBackend
from oserve.runtime.engine.vllm import wait_healthy
from oserve.runtime.orchestrator.base import RouteSink
from oserve.runtime.orchestrator.managed import ManagedOrchestrator
from oserve.spec import Cluster, ModelSpec, Replica

__all__ = ["RayEngine", "RayOrchestrator"]


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ConfigError("the ray orchestrator needs Ray: pip install 'oserve[ray]'") from exc
    return ray


class _EngineActor:
    """Runs in a Ray worker on the replica's node: launches the engine process and answers for it."""

    def __init__(self) -> None:
        self.process: Any = None

    def start(
        self, backend: EngineBackend, replica: Replica, host: str, log_path: str
    ) -> tuple[str, int, list]:
        import ray

        from oserve.runtime.engine.process import EngineProcess, free_port

        devices = [int(g) if str(g).isdigit() else g for g in ray.get_gpu_ids()]
        port = free_port(host)
        launch = backend.launch(replica, port=port, host=host, device_ids=devices)
        self.process = EngineProcess(launch, log_path)
        connect = ray.util.get_node_ip_address() if host in ("0.0.0.0", "") else host
        return f"http://{connect}:{port}", self.process.pid, devices

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()

    def log_tail(self) -> str:
        return self.process.log_tail() if self.process is not None else ""

    def stop(self, grace_s: float) -> int | None:
        if self.process is None:
            return None
        return asyncio.run(self.process.stop(grace_s))


class RayEngine:
    """The driver's side of one replica: its actor, placement group and URL."""

    def __init__(self, actor: Any, group: Any, url: str, pid: int, devices: list) -> None:
        self.actor, self.group, self.url, self.pid, self.devices = actor, group, url, pid, devices

    async def alive(self) -> bool:
        try:
            return bool(await self.actor.alive.remote())
        except Exception:  # the actor itself died (RayActorError and kin)
            return False

    async def _tail(self) -> str:
        try:
            return str(await self.actor.log_tail.remote())
        except Exception:
            return ""

    async def wait_ready(self, timeout_s: float) -> float:
        try:
            return await wait_healthy(self.url, timeout_s=timeout_s, alive=self.alive)
        except BackendError as exc:
            raise BackendError(f"{exc}: {await self._tail()}") from exc

    async def stop(self, grace_s: float) -> None:
        ray = _ray()
        with contextlib.suppress(Exception):  # a dead actor has nothing left to stop
            await self.actor.stop.remote(grace_s)
        ray.kill(self.actor)
        ray.util.remove_placement_group(self.group)


class RayOrchestrator(ManagedOrchestrator):
    """Replicas as Ray actors in per-replica placement groups."""

    name = "ray"

    def __init__(
        self,
        backend: EngineBackend,
        *,
        model: ModelSpec | None = None,
        cluster: Cluster | None = None,
        router: RouteSink | None = None,
        address: str | None = None,
        num_gpus: int | None = None,
        log_dir: Path | str = "oserve-logs",
        host: str = "127.0.0.1",
        placement_timeout_s: float = 120.0,
        drain_timeout_s: float = 60.0,
        stop_grace_s: float = 30.0,
        min_serving_fraction: float = 0.5,
    ) -> None:
        super().__init__(
            backend,
            model=model,
            cluster=cluster,
            router=router,
            drain_timeout_s=drain_timeout_s,
            stop_grace_s=stop_grace_s,
            min_serving_fraction=min_serving_fraction,
        )
        ray = _ray()
        if not ray.is_initialized():
            # a local Ray (no address) with ``num_gpus`` logical GPUs: emulated engines need no devices
            local = {"num_gpus": num_gpus} if address is None and num_gpus is not None else {}
            ray.init(address=address, include_dashboard=False, log_to_driver=False, **local)
        self._actor_class = ray.remote(_EngineActor)
        self.log_dir = Path(log_dir).resolve()
        self.host = host
        self.placement_timeout_s = placement_timeout_s
        self._launches = itertools.count()

    async def _launch(self, replica: Replica) -> RayEngine:
        ray = _ray()
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        if self.cluster is not None and len({self.cluster.gpus[g].node for g in replica.gpu_ids}) > 1:
            raise ConfigError(
                f"replica {replica.name} spans nodes; the ray orchestrator places each replica on one node"
            )
        n = replica.config.num_gpus
        group = placement_group([{"GPU": n}], strategy="STRICT_PACK", name=f"oserve-{replica.name}")
        actor = None
        try:
            try:
                await asyncio.wait_for(group.ready(), self.placement_timeout_s)
            except TimeoutError:
                raise BackendError(
                    f"Ray could not place replica {replica.name} ({n} GPUs on one node) within "
                    f"{self.placement_timeout_s:g} s; free GPUs: {ray.available_resources().get('GPU', 0):g}"
                ) from None
            strategy = PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=0)
            actor = self._actor_class.options(
                num_cpus=0, num_gpus=n, max_concurrency=4, scheduling_strategy=strategy
            ).remote()
            log = self.log_dir / f"{replica.name}-{next(self._launches)}.log"
            try:
                url, pid, devices = await actor.start.remote(self.backend, replica, self.host, str(log))
            except ray.exceptions.RayError as exc:
                raise BackendError(f"Ray actor for replica {replica.name} failed to launch: {exc}") from exc
        except BaseException:  # failed or cancelled: give the GPUs back
            if actor is not None:
                with contextlib.suppress(Exception):
                    await actor.stop.remote(0.0)
                ray.kill(actor)
            ray.util.remove_placement_group(group)
            raise
        return RayEngine(actor, group, url, pid, devices)

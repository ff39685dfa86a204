"""What every orchestrator shares: ``apply`` as waves of start / route / drain / stop, ``restore`` and ``shutdown``.

Subclasses only launch one replica's engine (``_launch``, returning an ``EngineHandle``); the waves come from
``plan_waves``. The router (the gateway) is re-pointed before anything stops and after anything starts, and a
replica stops only after the gateway has no request in flight on it and the engine reports itself idle (or the
drain timeout passed; then SIGTERM still lets the engine finish what it holds). One lock serialises ``apply``,
``restore`` and ``shutdown``, so the controller and ``oserve deploy`` never interleave.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol

from oserve.adapt.waves import diff_deployments, plan_waves, routing_deployment
from oserve.errors import BackendError, ConfigError, OServeError, SpecError
from oserve.perf import CostModel
from oserve.runtime.engine.launch import EngineBackend
from oserve.runtime.engine.vllm import wait_idle
from oserve.runtime.orchestrator.base import ApplyReport, ApplyStep, RouteSink
from oserve.spec import Cluster, Deployment, ModelSpec, Replica, get_model

__all__ = ["EngineHandle", "ManagedOrchestrator"]


class EngineHandle(Protocol):
    """A launched engine: where it listens and how to check and stop it."""

    url: str

    async def wait_ready(self, timeout_s: float) -> float:
        """Until /health answers 200 (seconds waited); ``BackendError`` if it exits or times out first."""
        ...

    async def alive(self) -> bool: ...

    async def stop(self, grace_s: float) -> None:
        """SIGTERM, then SIGKILL after ``grace_s``."""
        ...


class ManagedOrchestrator:
    """Base of ``LocalOrchestrator`` and ``RayOrchestrator``."""

    name = "managed"

    def __init__(
        self,
        backend: EngineBackend,
        *,
        model: ModelSpec | None = None,
        cluster: Cluster | None = None,
        router: RouteSink | None = None,
        drain_timeout_s: float = 60.0,
        stop_grace_s: float = 30.0,
        min_serving_fraction: float = 0.5,
    ) -> None:
        if drain_timeout_s < 0 or stop_grace_s < 0:
            raise ConfigError("drain_timeout_s and stop_grace_s must be >= 0")
        if not 0.0 <= min_serving_fraction <= 1.0:
            raise ConfigError(f"min_serving_fraction must be in [0, 1], got {min_serving_fraction}")
        self.backend = backend
        self.model = model
        self.cluster = cluster
        self.drain_timeout_s = drain_timeout_s
        self.stop_grace_s = stop_grace_s
        self.min_serving_fraction = min_serving_fraction
        self._router = router
        self._engines: dict[str, EngineHandle] = {}
        self._replicas: dict[str, Replica] = {}
        self._deployment: Deployment | None = None
        #: the deployment the last apply meant to run (the target, or the previous one after a rollback):
        #: what /health compares the routed capacity with
        self.planned: Deployment | None = None
        self._lock = asyncio.Lock()
        self._applying = False

    # -- subclass hook ----------------------------------------------------------------------------------------
    async def _launch(self, replica: Replica) -> EngineHandle:
        raise NotImplementedError

    # -- public -----------------------------------------------------------------------------------------------
    def attach(self, router: RouteSink) -> None:
        self._router = router

    def current(self) -> Deployment | None:
        return self._deployment

    @property
    def switching(self) -> bool:
        """An apply (a planned switch, not a restore after a fault) is under way."""
        return self._applying

    def endpoints(self) -> dict[str, str]:
        if self._deployment is None:
            return {}
        return {r.name: self._engines[r.name].url for r in self._deployment.replicas}

    async def apply(self, deployment: Deployment) -> ApplyReport:
        async with self._lock:
            target = self._check(deployment)
            self._applying = True
            try:
                if self._deployment is None:
                    return await self._first(target)
                return await self._switch(target)
            finally:
                self._applying = False

    async def dead(self) -> list[str]:
        """Routed replicas whose engine exited; none while an apply or restore is under way (they own the
        engines then, and a start that fails fails the apply)."""
        if self._deployment is None or self._lock.locked():
            return []
        engines = [(r.name, self._engines[r.name]) for r in self._deployment.replicas]
        alive = await asyncio.gather(*(e.alive() for _, e in engines))
        return [n for (n, _), ok in zip(engines, alive, strict=True) if not ok]

    async def restore(self, name: str) -> float:
        async with self._lock:
            if self._deployment is None or name not in self._replicas:
                raise ConfigError(f"no running replica {name!r}")
            start = time.monotonic()
            if await self._engines[name].alive():  # restored or replaced meanwhile
                return 0.0
            current = self._deployment
            others = [r for r in current.replicas if r.name != name]
            if others:
                self._route(routing_deployment(current, current, others, f"restoring {name}"))
            else:
                self._pause(f"restarting {name}")
            await self._engines[name].stop(0.0)
            try:
                await self._start([self._replicas[name]])
            finally:
                self._route(current)
            return time.monotonic() - start

    async def shutdown(self) -> None:
        async with self._lock:
            await asyncio.gather(*(e.stop(self.stop_grace_s) for e in self._engines.values()))
            self._engines.clear()
            self._replicas.clear()
            self._deployment = None

    # -- internals --------------------------------------------------------------------------------------------
    def _check(self, deployment: Deployment) -> Deployment:
        """The same model as running (spelled either way), fitting the cluster, every replica able to start: all
        checked before anything stops."""
        running = self._deployment.model if self._deployment is not None else ""
        expected = running or (self.model.name if self.model is not None else "")
        same = self.model is not None and _same_model(self.model, deployment.model)
        if expected and deployment.model and deployment.model != expected and not same:
            raise ConfigError(
                f"the deployment serves {deployment.model!r} but this runtime serves {expected!r}; "
                "a switch changes the layout of one model, not the model"
            )
        if expected:
            deployment = replace(deployment, model=expected)
        if self.cluster is not None:
            try:
                deployment.validate(self.cluster)
            except SpecError as exc:
                raise ConfigError(f"deployment does not fit cluster {self.cluster.name}: {exc}") from exc
        if self.model is not None:
            running = {r.name: r.config for r in self._deployment.replicas} if self._deployment else {}
            for r in deployment.replicas:
                if running.get(r.name) == r.config:
                    continue
                # the engine refuses a replica whose memory cannot hold a context (e.g. a KV cache of 0 tokens)
                reason = CostModel(self.model, r.config).unfit_reason
                if reason is not None:
                    raise ConfigError(f"replica {r.name} ({r.config.label}) cannot start: {reason}")
        return deployment

    def _pause(self, reason: str) -> None:
        """Nothing can be routed for a while: the gateway holds new requests until the next ``_route``."""
        pause = getattr(self._router, "pause", None)
        if pause is not None:
            pause(reason)

    def _route(self, deployment: Deployment) -> None:
        if self._router is not None:
            endpoints = {r.name: self._engines[r.name].url for r in deployment.replicas}
            self._router.set_routes(deployment, endpoints)

    async def _start(self, replicas: Sequence[Replica]) -> None:
        """Launch ``replicas`` together and wait until all are healthy. On a failure, or when cancelled (the
        controller stopping mid-restore), every engine launched here is stopped before the error goes on."""
        tasks = [asyncio.create_task(self._launch(r)) for r in replicas]
        try:
            engines = list(await asyncio.gather(*tasks))
            await asyncio.gather(*(e.wait_ready(self.backend.startup_timeout_s) for e in engines))
        except BaseException as exc:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            launched = [t.result() for t in tasks if not t.cancelled() and t.exception() is None]
            await asyncio.shield(asyncio.gather(*(e.stop(0.0) for e in launched), return_exceptions=True))
            if isinstance(exc, OServeError) or not isinstance(exc, Exception):
                raise
            names = ", ".join(r.name for r in replicas)
            raise BackendError(f"starting {names} failed: {exc!r}") from exc
        for r, e in zip(replicas, engines, strict=True):
            self._engines[r.name] = e
            self._replicas[r.name] = r

    async def _drain_and_stop(self, names: Sequence[str], *, wait: bool = True) -> list[str]:
        """Wait until neither the gateway nor the engine holds a request (up to the drain timeout), then stop;
        returns the names whose drain timed out."""

        async def one(name: str) -> bool:
            deadline = time.monotonic() + (self.drain_timeout_s if wait else 0.0)
            while self._router is not None and self._router.inflight(name) > 0:
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.02)
            left = max(0.0, deadline - time.monotonic())
            engine = self._engines[name]
            idle = True
            if wait and await engine.alive():
                idle = await wait_idle(engine.url, timeout_s=left)
            await engine.stop(self.stop_grace_s)
            del self._engines[name]
            del self._replicas[name]
            return idle

        idle = await asyncio.gather(*(one(n) for n in names))
        return [n for n, ok in zip(names, idle, strict=True) if not ok]

    async def _first(self, target: Deployment) -> ApplyReport:
        t0 = time.monotonic()
        await self._start(target.replicas)
        names = tuple(r.name for r in target.replicas)
        step = ApplyStep("start", names, 0.0, time.monotonic() - t0)
        self._deployment = self.planned = target
        self._route(target)
        return ApplyReport(target, (), names, (), {}, (step,), time.monotonic() - t0)

    async def _switch(self, target: Deployment) -> ApplyReport:
        t0 = time.monotonic()
        current = self._deployment
        assert current is not None
        tr = diff_deployments(current, target, model=self.model, cluster=self.cluster)
        waves = plan_waves(tr, current, min_serving_fraction=self.min_serving_fraction)
        final = {r.name: r for r in tr.target.replicas}
        routed = {r.name: r for r in current.replicas}
        steps: list[ApplyStep] = []
        timeouts: list[str] = []
        gap_s = 0.0
        notes = (
            [f"switch planner estimate on GPUs (weights moved, engines restarted): {tr.estimate_s:.1f} s"]
            if tr.estimate_s is not None
            else []
        )

        def since() -> float:
            return time.monotonic() - t0

        for wave in waves:
            gap_from = None
            if wave.stop:
                routed = {n: r for n, r in routed.items() if n not in wave.stop}
                gap_from = since() if not routed else None
                if not routed:  # a gap: the gateway holds what arrives until the next wave is routed
                    self._pause(f"switching to {target.describe()}")
                if routed:
                    done = set(routed) == set(final) and not wave.start
                    self._route(
                        tr.target if done else routing_deployment(tr.target, current, list(routed.values()))
                    )
                s = since()
                # in a gap nothing else can take the traffic: stop at once (SIGTERM still finishes what they hold)
                timeouts += await self._drain_and_stop(wave.stop, wait=not wave.gap)
                steps.append(
                    ApplyStep("stop", wave.stop, s, since(), "gap: nothing routed" if wave.gap else "")
                )
            if wave.start:
                s = since()
                try:
                    await self._start([final[n] for n in wave.start])
                except OServeError as exc:
                    outcome = await self._roll_back(current)
                    raise BackendError(
                        f"switch stopped while starting {', '.join(wave.start)}: {exc}; {outcome}"
                    ) from exc
                steps.append(ApplyStep("start", wave.start, s, since()))
                routed.update({n: final[n] for n in wave.start})
                done = set(routed) == set(final)
                self._route(
                    tr.target if done else routing_deployment(tr.target, current, list(routed.values()))
                )
                if wave.gap and gap_from is not None:
                    gap_s += since() - gap_from
        self._deployment = self.planned = tr.target
        self._route(tr.target)
        if timeouts:
            notes.append(f"drain timed out after {self.drain_timeout_s:g} s on {', '.join(timeouts)}")
        return ApplyReport(
            tr.target,
            tr.kept,
            tr.started,
            tr.stopped,
            tr.renamed,
            tuple(steps),
            since(),
            gap_s,
            tuple(timeouts),
            tuple(notes),
        )

    async def _roll_back(self, previous: Deployment) -> str:
        """After a failed start: stop what the switch started, start again what it stopped, route ``previous``.
        Returns what happened, for the error message."""
        self.planned = previous
        by_name = {r.name: r for r in previous.replicas}
        up = [r for r in previous.replicas if r.name in self._engines]
        if up:
            self._route(routing_deployment(previous, previous, up, "rolling back"))
        else:
            self._pause("rolling back a failed switch")
        started = [n for n in self._engines if n not in by_name]
        await self._drain_and_stop(started)
        missing = [r for r in previous.replicas if r.name not in self._engines]
        try:
            await self._start(missing)
        except OServeError as exc:
            up = [r for r in previous.replicas if r.name in self._engines]
            self._deployment = routing_deployment(previous, previous, up, "rollback failed") if up else None
            if self._deployment is not None:
                self._route(self._deployment)
            return f"rolling back failed too ({exc}); serving {len(up)} of {len(previous.replicas)} replicas"
        self._deployment = previous
        self._route(previous)
        return f"rolled back to {previous.describe()}"


def _same_model(model: ModelSpec, name: str) -> bool:
    try:
        other = get_model(name)
    except SpecError:
        return name in (model.name, model.hf_id)
    return other.name == model.name

"""Orchestrators by the name users type: ``local`` (processes on this machine) and ``ray`` (actors on a cluster).

``make_orchestrator("local", backend, model=..., cluster=...)``; every one follows the ``Orchestrator`` protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from oserve.adapt.waves import (
    Transition,
    Wave,
    diff_deployments,
    plan_waves,
    routing_deployment,
)
from oserve.errors import ConfigError
from oserve.runtime.engine.launch import EngineBackend
from oserve.runtime.orchestrator.base import ApplyReport, ApplyStep, Orchestrator, RouteSink
from oserve.runtime.orchestrator.local import LocalOrchestrator
from oserve.runtime.orchestrator.managed import EngineHandle, ManagedOrchestrator

__all__ = [
    "ORCHESTRATORS",
    "ApplyReport",
    "ApplyStep",
    "EngineHandle",
    "LocalOrchestrator",
    "ManagedOrchestrator",
    "Orchestrator",
    "RouteSink",
    "Transition",
    "Wave",
    "diff_deployments",
    "make_orchestrator",
    "plan_waves",
    "routing_deployment",
]


def _ray(backend: EngineBackend, **params: Any) -> Orchestrator:
    from oserve.runtime.orchestrator.ray_orch import RayOrchestrator

    return RayOrchestrator(backend, **params)


ORCHESTRATORS: dict[str, Callable[..., Orchestrator]] = {"local": LocalOrchestrator, "ray": _ray}


def make_orchestrator(name: str, backend: EngineBackend, **params: Any) -> Orchestrator:
    """An orchestrator by its registered name, running engines of ``backend``."""
    try:
        factory = ORCHESTRATORS[name]
    except KeyError:
        raise ConfigError(
            f"unknown orchestrator {name!r}; choose one of {', '.join(ORCHESTRATORS)}"
        ) from None
    return factory(backend, **params)

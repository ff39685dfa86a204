"""The ``Orchestrator`` protocol, what ``apply`` reports, and the gateway side it drives (``RouteSink``).

An orchestrator owns the engine replicas of one deployment: ``apply(target)`` turns the running deployment into the
target (keeping identical replicas, starting new ones before stopping old ones where the GPUs allow, draining what
stops) and re-routes the gateway at each step, so no accepted request is lost. ``local`` runs engines as processes
on this machine, ``ray`` as Ray actors on a cluster (``ORCHESTRATORS``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from oserve.spec import Deployment

__all__ = ["ApplyReport", "ApplyStep", "Orchestrator", "RouteSink"]


class RouteSink(Protocol):
    """What an orchestrator needs from the gateway (``oserve.runtime.gateway.Gateway`` is one)."""

    def set_routes(self, deployment: Deployment, endpoints: Mapping[str, str]) -> None:
        """Swap the routing table at once; requests in flight finish where they are."""
        ...

    def inflight(self, replica_name: str) -> int:
        """Requests the gateway has sent to ``replica_name`` that have not finished."""
        ...


@dataclass(frozen=True, slots=True)
class ApplyStep:
    """One step of a switch: ``action`` (start, route, drain, stop, restart) on ``replicas``, seconds after the
    apply began."""

    action: str
    replicas: tuple[str, ...]
    start_s: float
    end_s: float
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "replicas": list(self.replicas),
            "start_s": round(self.start_s, 4),
            "end_s": round(self.end_s, 4),
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class ApplyReport:
    """What ``apply`` did: the deployment now running (target names may differ where a running replica was kept
    under its own name, ``renamed``), what kept, started and stopped, each step, and the time to converge."""

    deployment: Deployment
    kept: tuple[str, ...]
    started: tuple[str, ...]
    stopped: tuple[str, ...]
    renamed: Mapping[str, str]
    steps: tuple[ApplyStep, ...]
    converge_s: float
    gap_s: float = 0.0  # time no replica was routed (only when every running replica had to stop first)
    drain_timeouts: tuple[
        str, ...
    ] = ()  # replicas stopped with requests still in flight after the drain timeout
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def changed(self) -> bool:
        return bool(self.started or self.stopped)

    def describe(self) -> str:
        head = (
            f"applied {self.deployment.describe()} in {self.converge_s:.2f} s: kept {len(self.kept)}, "
            f"started {len(self.started)}, stopped {len(self.stopped)}"
        )
        lines = [head]
        lines += [
            f"  {s.start_s:7.2f}-{s.end_s:7.2f} s  {s.action:<7} {', '.join(s.replicas)}"
            + (f"  ({s.note})" if s.note else "")
            for s in self.steps
        ]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "deployment": self.deployment.to_dict(),
            "kept": list(self.kept),
            "started": list(self.started),
            "stopped": list(self.stopped),
            "renamed": dict(self.renamed),
            "steps": [s.to_dict() for s in self.steps],
            "converge_s": round(self.converge_s, 4),
            "gap_s": round(self.gap_s, 4),
            "drain_timeouts": list(self.drain_timeouts),
            "notes": list(self.notes),
        }


class Orchestrator(Protocol):
    """Runs the replicas of a deployment and keeps the gateway's routes in step with them."""

    #: the registry name users type (``--orchestrator local``)
    name: str

    def attach(self, router: RouteSink) -> None:
        """Drive ``router``'s routes from now on (before it exists, ``apply`` only starts and stops engines)."""
        ...

    async def apply(self, deployment: Deployment) -> ApplyReport:
        """Converge on ``deployment``: start, route, drain and stop so no accepted request is lost."""
        ...

    def current(self) -> Deployment | None:
        """The deployment routed now (None before the first apply)."""
        ...

    def endpoints(self) -> dict[str, str]:
        """Base URL of each routed replica, by name."""
        ...

    async def dead(self) -> list[str]:
        """Routed replicas whose engine has exited or stopped answering."""
        ...

    async def restore(self, name: str) -> float:
        """Restart the dead engine of replica ``name`` in place (same config and GPUs) and route it again; returns
        seconds taken (0 when its engine is alive)."""
        ...

    async def shutdown(self) -> None:
        """Stop every engine (each finishes its in-flight requests first)."""
        ...

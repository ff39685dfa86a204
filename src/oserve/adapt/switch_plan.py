"""What the switch planner returns: a ``SwitchPlan`` of kept, stopped and started replicas and every transfer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from oserve.adapt.transfers import Transfer
from oserve.errors import ConfigError
from oserve.sim.policy import StopMode, Switch, SwitchSchedule
from oserve.spec import Deployment

__all__ = ["StartedReplica", "SwitchPlan"]


@dataclass(frozen=True, slots=True)
class StartedReplica:
    """A replica of the target that starts: when its GPUs are free, its weights in place, and it serves."""

    name: str
    label: str
    gpu_ids: tuple[int, ...]
    replaces: tuple[str, ...]  # running replicas whose GPUs it takes
    release_s: float
    weights_ready_s: float
    restart_s: float
    needed_bytes: int
    local_bytes: int

    @property
    def ready_s(self) -> float:
        return self.weights_ready_s + self.restart_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "config": self.label,
            "gpus": list(self.gpu_ids),
            "replaces": list(self.replaces),
            "release_s": self.release_s,
            "weights_ready_s": self.weights_ready_s,
            "restart_s": self.restart_s,
            "ready_s": self.ready_s,
            "needed_bytes": self.needed_bytes,
            "local_bytes": self.local_bytes,
        }


@dataclass(frozen=True, slots=True)
class SwitchPlan:
    """A switch, step by step: what keeps serving, what stops, what starts when, and every byte's route.

    ``target`` is the deployment to switch to, as planned: kept replicas carry their running names and GPU order,
    started ones the GPU order that reuses the most resident bytes.
    """

    method: str
    current: Deployment
    target: Deployment
    kept: tuple[str, ...]
    stopped: tuple[str, ...]
    started: tuple[StartedReplica, ...]
    transfers: tuple[Transfer, ...]
    drain_s: float
    duration_s: float
    capacity_lost_gpu_s: float
    link_gb_per_s: Mapping[str, float]
    notes: tuple[str, ...] = ()

    @property
    def restarts(self) -> int:
        return len(self.started)

    @property
    def moved_bytes(self) -> int:
        return sum(t.nbytes for t in self.transfers if t.link != "local")

    @property
    def transfer_s(self) -> float:
        """When the last byte arrives (0 when nothing moves)."""
        return max((t.end_s for t in self.transfers if t.link != "local"), default=0.0)

    def bytes_by_link(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.transfers:
            out[t.link] = out.get(t.link, 0) + t.nbytes
        return out

    def ready_s(self, name: str) -> float:
        """When replica ``name`` of the target serves (0 for kept ones)."""
        if name in self.kept:
            return 0.0
        for s in self.started:
            if s.name == name:
                return s.ready_s
        raise ConfigError(
            f"no replica {name!r} in the target; replicas: {[r.name for r in self.target.replicas]}"
        )

    def to_switch(self, mode: StopMode = "drain") -> Switch:
        """The simulator's ``Switch``: stopped replicas drain for ``drain_s``, each started one serves its
        planned delay after its GPUs are released."""
        delays = {s.name: s.ready_s - s.release_s for s in self.started}
        return Switch(self.target, SwitchSchedule(drain_s=self.drain_s, mode=mode, start_delay_s=delays))

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "current": self.current.describe(),
            "target": self.target.to_dict(),
            "kept": list(self.kept),
            "stopped": list(self.stopped),
            "started": [s.to_dict() for s in self.started],
            "drain_s": self.drain_s,
            "duration_s": self.duration_s,
            "transfer_s": self.transfer_s,
            "capacity_lost_gpu_s": self.capacity_lost_gpu_s,
            "moved_bytes": self.moved_bytes,
            "bytes_by_link": self.bytes_by_link(),
            "restarts": self.restarts,
            "transfers": [t.to_dict() for t in self.transfers],
            "link_gb_per_s": dict(self.link_gb_per_s),
            "notes": list(self.notes),
        }

    def describe(self, max_transfers: int = 12) -> str:
        """A few readable lines: the headline, each replica, bytes per link, the first transfers."""
        gb = 1e9
        lines = [
            f"switch {self.current.describe()} -> {self.target.describe()} ({self.method}): "
            f"{self.duration_s:.2f} s, weights in place after {self.transfer_s:.2f} s, "
            f"{self.capacity_lost_gpu_s:.0f} GPU-s out of service, {self.restarts} restart(s)",
            f"  kept    : {', '.join(self.kept) or '-'}",
            f"  stopped : {', '.join(self.stopped) or '-'}"
            + (f" (drain {self.drain_s:g} s)" if self.stopped else ""),
        ]
        for s in self.started:
            lines.append(
                f"  started : {s.name} {s.label} on GPUs {list(s.gpu_ids)}: free at {s.release_s:.2f} s, weights "
                f"{s.weights_ready_s:.2f} s ({s.local_bytes / gb:.1f} of {s.needed_bytes / gb:.1f} GB in place), "
                f"ready {s.ready_s:.2f} s"
            )
        by_link = self.bytes_by_link()
        if by_link:
            lines.append(
                "  bytes   : " + ", ".join(f"{k} {v / gb:.1f} GB" for k, v in sorted(by_link.items()))
            )
        moving = sorted(
            (t for t in self.transfers if t.link != "local"), key=lambda t: (t.start_s, t.dst_gpu)
        )
        for t in moving[:max_transfers]:
            lines.append(
                f"    {t.start_s:8.3f}-{t.end_s:8.3f} s  {t.src.label():>12} -> gpu{t.dst_gpu:<3} {t.link:<7} "
                f"{t.nbytes / gb:6.2f} GB  {', '.join(r.label() for r in t.ranges[:3])}"
                + (" ..." if len(t.ranges) > 3 else "")
            )
        if len(moving) > max_transfers:
            lines.append(f"    ... {len(moving) - max_transfers} more transfers")
        lines += [f"  note    : {n}" for n in self.notes]
        return "\n".join(lines)

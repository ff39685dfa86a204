"""The links weights move over during a switch, and a fluid schedule that never oversubscribes them.

Every path is a set of shared resources, each with a bandwidth (unidirectional, bytes/s):

| source -> destination GPU      | link      | resources used                                                  |
| ------------------------------ | --------- | --------------------------------------------------------------- |
| the same GPU                   | ``local`` | none: the bytes are already there                               |
| peer GPU, same node, NVLink    | ``nvlink``| ``nvlink-out`` of the source, ``nvlink-in`` of the destination   |
| peer GPU, same node, no NVLink | ``pcie``  | ``pcie-out`` of the source, ``pcie-in`` of the destination       |
| GPU on another node            | ``network`` | source ``pcie-out``, ``nic-out`` of its node, ``nic-in`` of the destination's node, destination ``pcie-in`` (GPUDirect RDMA) |
| host memory of the node        | ``host``  | destination ``pcie-in``                                          |
| local disk of the node         | ``disk``  | ``disk`` of the node, destination ``pcie-in``                     |

NVLink behind an NVSwitch (H100/H200/A100 SXM) lets any pair talk at a GPU's full port rate, so each GPU's port
is a resource in each direction: a pair gets at most ``Node.intra_gb_per_s``, and a GPU's sends (or receives) share
it. The NIC is the node's total (``Node.network_gb_per_s``, both directions separately), the disk the node's read
bandwidth (``Node.disk_gb_per_s``), PCIe the GPU's own link (``GpuSpec.pcie_gb_per_s``, or the node's
``intra_gb_per_s`` on PCIe-only nodes). Datasheet figures: achieved rates are typically 70-90 % of them.

``FluidSchedule`` keeps, per resource, the bandwidth reserved over time as a step function. A transfer placed
after the others takes, at every instant from its earliest start, all the bandwidth its path has left (the least
residual among its resources) until its bytes are through: strict-priority fluid sharing, in the order transfers are
placed. Its rate is therefore piecewise constant, and no resource ever carries more than its bandwidth.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from oserve.spec import Cluster

__all__ = ["LINK_ORDER", "FluidSchedule", "LinkKind", "Links", "Segment", "Source"]

LinkKind = Literal["local", "nvlink", "pcie", "network", "host", "disk"]
# Cheapest first: breaks ties between sources that would finish at the same time.
LINK_ORDER: tuple[LinkKind, ...] = ("local", "nvlink", "pcie", "network", "host", "disk")

Segment = tuple[float, float, float]  # (start_s, end_s, bytes per second)


@dataclass(frozen=True, slots=True)
class Source:
    """Where bytes come from: a GPU (``gpu`` set), or the host memory or disk of ``node``."""

    kind: Literal["gpu", "host", "disk"]
    node: int
    gpu: int | None = None

    def label(self) -> str:
        return f"gpu{self.gpu}" if self.kind == "gpu" else f"{self.kind}@node{self.node}"


class Links:
    """Routes and bandwidths of a cluster's links (GB/s in the specs, bytes/s here)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def route(self, src: Source, dst_gpu: int) -> tuple[LinkKind, tuple[str, ...]]:
        """The link kind and the resources a transfer from ``src`` to ``dst_gpu`` uses."""
        dst_node = self.cluster.gpus[dst_gpu].node
        if src.kind == "host":
            return "host", (f"pcie-in:{dst_gpu}",)
        if src.kind == "disk":
            return "disk", (f"disk:{src.node}", f"pcie-in:{dst_gpu}")
        g = src.gpu
        if g == dst_gpu:
            return "local", ()
        if src.node == dst_node:
            if self.cluster.nodes[dst_node].intra_link == "nvlink":
                return "nvlink", (f"nvlink-out:{g}", f"nvlink-in:{dst_gpu}")
            return "pcie", (f"pcie-out:{g}", f"pcie-in:{dst_gpu}")
        return "network", (f"pcie-out:{g}", f"nic-out:{src.node}", f"nic-in:{dst_node}", f"pcie-in:{dst_gpu}")

    def gb_per_s(self, resource: str) -> float:
        kind, _, index = resource.partition(":")
        i = int(index)
        if kind in ("nic-out", "nic-in"):
            return self.cluster.nodes[i].network_gb_per_s
        if kind == "disk":
            return self.cluster.nodes[i].disk_gb_per_s
        node = self.cluster.nodes[self.cluster.gpus[i].node]
        if kind in ("nvlink-out", "nvlink-in"):
            return node.intra_gb_per_s
        if kind in ("pcie-out", "pcie-in"):
            return node.intra_gb_per_s if node.intra_link == "pcie" else node.gpu.pcie_gb_per_s
        raise KeyError(resource)


class _Profile:
    """Bandwidth reserved on one resource: ``used[i]`` bytes/s on ``[times[i], times[i + 1])``, the last open."""

    __slots__ = ("cap", "times", "used")

    def __init__(self, cap: float) -> None:
        self.cap = cap
        self.times = [0.0]
        self.used = [0.0]

    def used_at(self, t: float) -> float:
        return self.used[bisect.bisect_right(self.times, t) - 1]

    def _split(self, t: float) -> int:
        i = bisect.bisect_right(self.times, t) - 1
        if self.times[i] == t:
            return i
        self.times.insert(i + 1, t)
        self.used.insert(i + 1, self.used[i])
        return i + 1

    def add(self, start: float, end: float, rate: float) -> None:
        i, j = self._split(start), self._split(end)
        for k in range(i, j):
            self.used[k] += rate
        k = max(1, i)  # merge equal neighbours around the change
        while k < len(self.times) and k <= j + 1:
            if self.used[k] == self.used[k - 1]:
                del self.times[k], self.used[k]
                j -= 1
            else:
                k += 1


class FluidSchedule:
    """Bandwidth reservations over time on every resource; see the module docstring."""

    def __init__(self, links: Links) -> None:
        self.links = links
        self._profiles: dict[str, _Profile] = {}

    def _profile(self, resource: str) -> _Profile:
        p = self._profiles.get(resource)
        if p is None:
            p = self._profiles[resource] = _Profile(self.links.gb_per_s(resource) * 1e9)
        return p

    def fill(
        self, resources: Sequence[str], ready_s: float, nbytes: int
    ) -> tuple[float, tuple[Segment, ...]]:
        """When ``nbytes`` over ``resources`` from ``ready_s`` would finish, and its rate segments (not reserved)."""
        if not resources or nbytes <= 0:
            return ready_s, ()
        profiles = [self._profile(r) for r in resources]
        tol = 1e-9 * min(p.cap for p in profiles)
        points = sorted({t for p in profiles for t in p.times if t > ready_s})
        points.append(math.inf)
        t, left, segments = ready_s, float(nbytes), []
        for b in points:
            rate = min(p.cap - p.used_at(t) for p in profiles)
            if rate > tol:
                if b == math.inf or left <= rate * (b - t):
                    end = t + left / rate
                    segments.append((t, end, rate))
                    return end, _merge(segments)
                segments.append((t, b, rate))
                left -= rate * (b - t)
            t = b
        raise AssertionError("unreachable: every reservation ends, so the last interval is free")

    def reserve(self, resources: Sequence[str], segments: Sequence[Segment]) -> None:
        for r in resources:
            p = self._profile(r)
            for start, end, rate in segments:
                p.add(start, end, rate)

    def peak_use(self) -> dict[str, float]:
        """The highest reserved share of each resource's bandwidth (1.0 = saturated at some instant)."""
        return {r: max(p.used) / p.cap for r, p in self._profiles.items()}


def _merge(segments: list[Segment]) -> tuple[Segment, ...]:
    out: list[Segment] = []
    for s in segments:
        if out and out[-1][2] == s[2] and out[-1][1] == s[0]:
            out[-1] = (out[-1][0], s[1], s[2])
        else:
            out.append(s)
    return tuple(out)

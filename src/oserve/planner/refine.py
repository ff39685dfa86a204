"""Upper level: refine the replica counts with moves the flow LP's feedback points to.

State: replicas per candidate config (all GPU types). A move takes ``m`` replicas of one config off their GPUs
(``m`` = 1, 2, 4, ... so large clusters converge in few steps) and fills the freed GPUs of that type with as
many replicas of another config as the nodes hold: split (TP4 -> 2 x TP2), merge (2 x TP2 -> TP4), re-parallelise
(TP4 -> TP2PP2) and fill (free GPUs -> replicas). GPU types change through fills of freed or idle GPUs.

The LP prices every config, used or not (``FlowResult.replica_value``: alpha one more replica adds), so a move's
first-order gain is ``m' * value[new] - m * value[old]``. Each step evaluates the best-priced moves exactly with
the LP and takes the best that raises alpha; it stops when none does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from oserve.planner.flow import FlowResult, max_load_scale
from oserve.planner.placement import PackingRows
from oserve.spec import ReplicaConfig

__all__ = ["RefineResult", "refine"]


@dataclass(frozen=True, slots=True)
class RefineResult:
    counts: np.ndarray
    flow: FlowResult
    start_alpha: float
    moves: list[str] = field(default_factory=list)
    evaluations: int = 0


def _neighbours(
    counts: np.ndarray, configs: list[ReplicaConfig], packing: PackingRows, value: np.ndarray
) -> list[tuple[float, np.ndarray, str]]:
    out: dict[tuple[int, ...], tuple[float, np.ndarray, str]] = {}
    by_gpu: dict[str, list[int]] = {}
    for i, c in enumerate(configs):
        by_gpu.setdefault(c.gpu.name, []).append(i)

    def add(new: np.ndarray, estimate: float, label: str) -> None:
        key = tuple(int(v) for v in new)
        if key != tuple(int(v) for v in counts) and (key not in out or out[key][0] < estimate):
            out[key] = (estimate, new, label)

    for same in by_gpu.values():
        for j in same:  # fill idle GPUs
            room = packing.max_count(counts, j)
            if room > 0:
                new = counts.copy()
                new[j] += room
                add(new, room * value[j], f"+{room} x {configs[j].label}")
        for i in same:
            m = 1
            while m <= counts[i]:
                removed = counts.copy()
                removed[i] -= m
                for j in same:
                    if j == i:
                        continue
                    room = packing.max_count(removed, j)
                    if room > 0:
                        new = removed.copy()
                        new[j] += room
                        add(
                            new,
                            room * value[j] - m * value[i],
                            f"{m} x {configs[i].label} -> {room} x {configs[j].label}",
                        )
                m *= 2
    return sorted(out.values(), key=lambda e: -e[0])


def refine(
    rates_rps: np.ndarray,
    mu_rps: np.ndarray,
    configs: list[ReplicaConfig],
    packing: PackingRows,
    start: np.ndarray,
    *,
    cap: float = 1.0,
    max_steps: int = 200,
    tries_per_step: int = 12,
) -> RefineResult:
    """Local search from ``start`` counts; every accepted move raises alpha."""
    counts = np.asarray(start, dtype=np.int64).copy()
    flow = max_load_scale(rates_rps, mu_rps, counts, cap=cap)
    start_alpha = flow.alpha
    moves: list[str] = []
    evaluations = 1
    for _ in range(max_steps):
        best: tuple[FlowResult, np.ndarray, str] | None = None
        for _estimate, new, label in _neighbours(counts, configs, packing, flow.replica_value)[
            :tries_per_step
        ]:
            trial = max_load_scale(rates_rps, mu_rps, new, cap=cap)
            evaluations += 1
            if trial.alpha > flow.alpha * (1 + 1e-6) and (best is None or trial.alpha > best[0].alpha):
                best = (trial, new, label)
        if best is None:
            break
        flow, counts, label = best
        moves.append(f"{label}: alpha {flow.alpha:.3f}")
    return RefineResult(counts, flow, start_alpha, moves, evaluations)

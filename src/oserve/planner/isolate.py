"""Long-context isolation: the long-prompt types on replicas of their own, every other type on the rest.

A long prefill (tens of thousands of tokens) on a replica that also serves chat holds the token budget for
seconds and stalls the short requests' decode steps behind it; long contexts also want wide replicas (KV room)
where chat wants many narrow ones. Isolation splits the cluster's GPUs ``k / N-k`` (``split_cluster``: the first
``k`` GPUs in node order and the rest, each a sub-cluster of its own), plans each part with ``plan`` for its own
types (``isolated_plan``), and merges the two deployments (GPU ids shifted back, replica names prefixed, each
type's weights only over its part's replicas). ``simulated_best_isolation`` tries a few ``k`` and keeps the best
by simulation, ranked as ``planner.verify`` ranks its candidates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from oserve.errors import ConfigError, InfeasibleError
from oserve.planner.demand import TypeDemand, demands_from_trace
from oserve.planner.plan import Plan, plan
from oserve.planner.slo import Slo
from oserve.planner.verify import PLAN_ROUTERS, TIE, Tried, Verified, best_index
from oserve.sim import SimResult, simulate
from oserve.spec import Cluster, Deployment, ModelSpec, Replica
from oserve.spec.grid import RequestGrid
from oserve.trace import Trace, TypeGrid
from oserve.trace.classify import LONG_PROMPT_TOKENS

__all__ = [
    "Isolated",
    "isolated_plan",
    "long_types",
    "simulated_best_isolation",
    "split_cluster",
    "split_sizes",
]

LONG, REST = "long", "rest"  # the two parts, also the replica name prefixes


@dataclass(frozen=True, slots=True)
class Isolated:
    """The merged deployment, the two parts' plans and how many GPUs (the first in node order) the long part got."""

    deployment: Deployment
    long_plan: Plan
    rest_plan: Plan
    long_gpus: int
    long_types: tuple[str, ...]

    @property
    def alpha(self) -> float:
        """The load scale both parts sustain (the lesser of the two parts' alphas)."""
        return min(self.long_plan.alpha, self.rest_plan.alpha)


def long_types(grid: TypeGrid, threshold_tokens: int = LONG_PROMPT_TOKENS) -> tuple[str, ...]:
    """The types whose prompts are all at least ``threshold_tokens`` long (their prompt bin starts there or
    above): the gateway knows a request's prompt length, so it types these exactly."""
    return tuple(t.name for t in grid.types if t.prompt_min_tokens >= threshold_tokens)


def split_cluster(
    cluster: Cluster, long_gpus: int
) -> tuple[tuple[Cluster, list[int]], tuple[Cluster, list[int]]]:
    """``(part, global ids)`` for the first ``long_gpus`` GPUs in node order and for the rest. A part's local GPU
    id ``i`` is global id ``ids[i]``; a node split between the parts gives each a smaller node of the same kind,
    so a TP group placed in a part stays inside one real node."""
    if not 0 < long_gpus < cluster.num_gpus:
        raise ConfigError(f"long part must get 1..{cluster.num_gpus - 1} GPUs, got {long_gpus}")
    parts: tuple[list, list] = ([], [])
    ids: tuple[list[int], list[int]] = ([], [])
    for node in cluster.nodes:
        gpus = cluster.node_gpu_ids(node.index)
        for side, chosen in enumerate(
            ([g for g in gpus if g < long_gpus], [g for g in gpus if g >= long_gpus])
        ):
            if chosen:
                parts[side].append(replace(node, index=len(parts[side]), num_gpus=len(chosen)))
                ids[side].extend(chosen)
    return (Cluster(tuple(parts[0])), ids[0]), (Cluster(tuple(parts[1])), ids[1])


def split_sizes(
    cluster: Cluster, demands: Sequence[TypeDemand], long: Sequence[str], plan_: Plan
) -> list[int]:
    """Candidate GPU counts for the long part: a quarter, half and three quarters of the cluster, and the share
    of the cluster the long types take in ``plan_``'s capacity model (their rate over their best per-GPU
    capacity against everyone's), rounded to an eighth of the cluster."""
    n = cluster.num_gpus
    step = max(1, n // 8)
    sizes = {max(step, n // 4), max(step, n // 2), max(step, 3 * n // 4)}
    per_gpu = plan_.mu_rps / np.array([c.num_gpus for c in plan_.configs])[None, :]
    best = per_gpu.max(axis=1)
    need = np.array(
        [d.rate_rps / best[k] if best[k] > 0 else 0.0 for k, d in enumerate(demands)], dtype=np.float64
    )
    is_long = np.array([d.name in long for d in demands])
    if need.sum() > 0 and need[is_long].sum() > 0:
        share = float(need[is_long].sum() / need.sum())
        sizes.add(int(min(n - step, max(step, step * round(share * n / step)))))
    return sorted(s for s in sizes if 0 < s < n)


def _shifted(replicas: Sequence[Replica], ids: list[int], prefix: str) -> list[Replica]:
    return [Replica(r.config, tuple(ids[g] for g in r.gpu_ids), f"{prefix}-{r.name}") for r in replicas]


def isolated_plan(
    model: ModelSpec,
    cluster: Cluster,
    demands: Sequence[TypeDemand],
    slo: Slo,
    long: Sequence[str],
    long_gpus: int,
    *,
    grid: TypeGrid | None = None,
    **plan_options,
) -> Isolated:
    """Plan the ``long`` types on the cluster's first ``long_gpus`` GPUs and every other type on the rest, and
    merge the two (each type routed only to its part's replicas; a type without a row in its part's plan, e.g.
    one of rate 0, spread evenly over that part). Raises ``InfeasibleError`` when either part plans nothing."""
    long = tuple(long)
    (long_cluster, long_ids), (rest_cluster, rest_ids) = split_cluster(cluster, long_gpus)
    mine = [d for d in demands if d.name in long]
    others = [d for d in demands if d.name not in long]
    if not any(d.rate_rps > 0 for d in mine) or not any(d.rate_rps > 0 for d in others):
        raise InfeasibleError("isolation needs traffic both in the long types and in the others")
    long_plan = plan(model, long_cluster, mine, slo, grid=grid, **plan_options)
    rest_plan = plan(model, rest_cluster, others, slo, grid=grid, **plan_options)
    long_replicas = _shifted(long_plan.deployment.replicas, long_ids, LONG)
    rest_replicas = _shifted(rest_plan.deployment.replicas, rest_ids, REST)
    weights: dict[str, dict[str, float]] = {}
    for part, replicas, prefix, part_demands in (
        (long_plan, long_replicas, LONG, mine),
        (rest_plan, rest_replicas, REST, others),
    ):
        for d in part_demands:
            row = part.deployment.weights.get(d.name)
            weights[d.name] = (
                {f"{prefix}-{name}": w for name, w in row.items()}
                if row
                else {r.name: 1.0 / len(replicas) for r in replicas}
            )
    describe = lambda p: p.deployment.note.removeprefix("oserve plan: ")  # noqa: E731
    deployment = Deployment(
        model.name,
        tuple(long_replicas + rest_replicas),
        weights,
        RequestGrid.of(grid) if grid is not None else None,
        f"isolated long context: {describe(long_plan)} for {', '.join(long)}; {describe(rest_plan)} for the rest",
    )
    return Isolated(deployment, long_plan, rest_plan, long_gpus, long)


def simulated_best_isolation(
    trace: Trace,
    model: ModelSpec,
    cluster: Cluster,
    slo: Slo,
    *,
    grid: TypeGrid,
    long: Sequence[str] | None = None,
    sizes: Sequence[int] | None = None,
    routers: Sequence[str] = PLAN_ROUTERS,
    peak_quantile: float = 0.9,
    tie: float = TIE,
    scoring: Callable[[SimResult], SimResult] | None = None,
    progress: Callable[[str], None] | None = None,
    oracle_lengths: bool = False,
    **plan_options,
) -> tuple[Verified, Isolated]:
    """Isolate ``long`` (default: ``long_types(grid)``) on ``sizes`` GPUs each (default: ``split_sizes``), plan
    both parts for ``trace``'s ``peak_quantile`` minute, simulate each under ``routers`` and return the best (as
    ``simulated_best_plan`` ranks: goodput, then p99 E2E) with its ``Isolated``. Raises ``InfeasibleError`` when no
    split plans."""
    say = progress or (lambda _msg: None)
    long = tuple(long if long is not None else long_types(grid))
    demands, typed = demands_from_trace(trace, grid, peak_quantile=peak_quantile)
    if sizes is None:
        whole = plan(model, cluster, demands, slo, grid=typed, **plan_options)
        sizes = split_sizes(cluster, demands, long, whole)
    candidates: list[tuple[str, Isolated, str, SimResult]] = []
    failure: InfeasibleError | None = None
    for k in sizes:
        try:
            isolated = isolated_plan(model, cluster, demands, slo, long, k, grid=typed, **plan_options)
        except (InfeasibleError, ValueError) as exc:
            failure = InfeasibleError(f"long part on {k} GPUs: {exc}")
            continue
        for router in routers:
            label = f"isolated@{k}"
            say(f"verifying {label} ({router})")
            result = simulate(
                trace,
                isolated.deployment,
                model,
                cluster,
                router=router,
                slo=slo.to_dict(),
                oracle_lengths=oracle_lengths,
            )
            candidates.append((label, isolated, router, (scoring or (lambda r: r))(result)))
    if not candidates:
        raise failure or InfeasibleError("no split size to try")
    tried = tuple(Tried.of(label, router, r) for label, _, router, r in candidates)
    i = best_index([(t.goodput_rps, t.e2e_p99_s, t.e2e_mean_s) for t in tried], tie)
    label, isolated, router, result = candidates[i]
    return Verified(label, isolated.deployment, router, result, None, tried), isolated

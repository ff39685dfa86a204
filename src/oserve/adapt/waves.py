"""From the running deployment to a target one: what keeps running, what starts and stops, and in which waves.

``diff_deployments`` matches replicas with the switch planner's rules (``oserve.adapt``): a target replica with the
config and GPUs of a running one is that engine and keeps running under its running name; with the model and
cluster known, ``plan_switch`` also keeps same-config replicas by re-placing the target around them and orders the
started ones by when their weights can be ready. ``plan_waves`` then orders the work so capacity never drops to
zero where the GPUs allow: replicas on free GPUs start first; then each wave stops the replicas whose GPUs the next
started replicas need, while at least ``min_serving_fraction`` of the routed GPUs keep serving, and starts them;
replicas no started one replaces stop last, after the target is routed. ``routing_deployment`` is the interim
routing table of a wave: the target's weights over the replicas up, the old weights for types none of them serves.
``staged_switches`` turns the waves into the simulator's switches, so the adaptive policies switch as the runtime
orchestrator does (part of the cluster keeps serving) rather than all replicas at once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from oserve.adapt.match import adopt_names, match_replicas
from oserve.adapt.switch import plan_switch
from oserve.adapt.switch_plan import SwitchPlan
from oserve.sim.policy import Switch, SwitchSchedule
from oserve.spec import Cluster, Deployment, ModelSpec, Replica

__all__ = ["Transition", "Wave", "diff_deployments", "plan_waves", "routing_deployment", "staged_switches"]


@dataclass(frozen=True, slots=True)
class Transition:
    """``target`` as it will run (kept replicas under their running names), and the work to get there."""

    target: Deployment
    kept: tuple[str, ...]
    stopped: tuple[str, ...]
    started: tuple[str, ...]  # in start order
    replaces: dict[str, tuple[str, ...]]  # started name -> running replicas on its GPUs
    renamed: dict[str, str]  # target name -> final name, where they differ
    estimate_s: float | None = None  # the switch planner's duration, when it could price the switch


@dataclass(frozen=True, slots=True)
class Wave:
    """Stop ``stop`` (after routing around and draining them), then start ``start`` and route to them."""

    stop: tuple[str, ...]
    start: tuple[str, ...]
    gap: bool = False  # nothing stays routed while this wave's replicas stop


def diff_deployments(
    current: Deployment,
    target: Deployment,
    *,
    model: ModelSpec | None = None,
    cluster: Cluster | None = None,
) -> Transition:
    """Match ``target`` to ``current``; with ``model`` and ``cluster`` the switch planner matches, validates
    (memory per GPU, TP inside a node) and orders the started replicas."""
    estimate = None
    if model is not None and cluster is not None:
        plan = plan_switch(current, target, model, cluster)
        final = plan.target
        kept = set(plan.kept)
        order = {s.name: (s.ready_s, s.name) for s in plan.started}
        estimate = plan.duration_s
        renamed = _renames(target, final)
    else:
        matched, kept_map = match_replicas(current, target, cluster, rematch=False)  # type: ignore[arg-type]
        final, names = adopt_names(matched, kept_map)
        kept = set(kept_map.values())
        order = {}
        renamed = {k: v for k, v in names.items() if k != v}
    started = [r for r in final.replicas if r.name not in kept]
    stopped = [r for r in current.replicas if r.name not in kept]
    # a started replica may not reuse the name of a running one it does not replace: both run for a while
    final, more = _fresh_names(final, started, stopped)
    renamed.update(more)
    started = [r for r in final.replicas if r.name not in kept]
    owner = {g: r.name for r in stopped for g in r.gpu_ids}
    replaces = {r.name: tuple(sorted({owner[g] for g in r.gpu_ids if g in owner})) for r in started}
    by_order = sorted(started, key=lambda r: order.get(r.name, (0.0, r.name)))
    return Transition(
        target=final,
        kept=tuple(r.name for r in current.replicas if r.name in kept),
        stopped=tuple(r.name for r in stopped),
        started=tuple(r.name for r in by_order),
        replaces=replaces,
        renamed=renamed,
        estimate_s=estimate,
    )


def _renames(target: Deployment, final: Deployment) -> dict[str, str]:
    """Pair target and final replicas by config and GPU set (the planner may re-order GPUs, not change them)."""
    out: dict[str, str] = {}
    free = list(final.replicas)
    for r in target.replicas:
        match = next(
            (f for f in free if f.config == r.config and set(f.gpu_ids) == set(r.gpu_ids)), None
        ) or next((f for f in free if f.config == r.config and f.name == r.name), None)
        if match is None:
            match = next((f for f in free if f.config == r.config), None)
        if match is not None:
            free.remove(match)
            if match.name != r.name:
                out[r.name] = match.name
    return out


def _fresh_names(
    final: Deployment, started: list[Replica], stopped: list[Replica]
) -> tuple[Deployment, dict[str, str]]:
    stopped_gpus = {r.name: set(r.gpu_ids) for r in stopped}
    taken = {r.name for r in final.replicas} | set(stopped_gpus)
    renames: dict[str, str] = {}
    for r in started:
        if r.name in stopped_gpus and not (stopped_gpus[r.name] & set(r.gpu_ids)):
            i = 0
            while f"r{i}" in taken:
                i += 1
            renames[r.name] = f"r{i}"
            taken.add(f"r{i}")
    if not renames:
        return final, {}
    replicas = tuple(replace(r, name=renames.get(r.name, r.name)) for r in final.replicas)
    weights = {t: {renames.get(n, n): w for n, w in row.items()} for t, row in final.weights.items()}
    return replace(final, replicas=replicas, weights=weights), renames


def plan_waves(
    transition: Transition, current: Deployment, *, min_serving_fraction: float = 0.5
) -> list[Wave]:
    """The order of work: free-GPU starts, then stop/start waves keeping capacity, then the leftover stops."""
    gpus = {r.name: r.config.num_gpus for r in (*current.replicas, *transition.target.replicas)}
    routed = {r.name for r in current.replicas}
    waves: list[Wave] = []
    first = tuple(n for n in transition.started if not transition.replaces[n])
    if first:
        waves.append(Wave((), first))
        routed |= set(first)
    stopped: set[str] = set()
    pending = [n for n in transition.started if transition.replaces[n]]
    while pending:
        floor = max(1, min_serving_fraction * sum(gpus[n] for n in routed))
        batch: list[str] = []
        blockers: set[str] = set()
        for name in pending:
            more = blockers | (set(transition.replaces[name]) - stopped)
            if sum(gpus[n] for n in routed - more) >= floor:
                batch.append(name)
                blockers = more
        gap = not batch
        if gap:  # every routed replica must stop before the next start: unavoidable gap
            batch = [pending[0]]
            blockers = set(transition.replaces[pending[0]]) - stopped
        waves.append(Wave(tuple(sorted(blockers)), tuple(batch), gap))
        stopped |= blockers
        routed = (routed - blockers) | set(batch)
        pending = [n for n in pending if n not in batch]
    rest = tuple(n for n in transition.stopped if n not in stopped)
    if rest:
        waves.append(Wave(rest, ()))
    return waves


def routing_deployment(
    target: Deployment, current: Deployment, replicas: list[Replica], note: str = "switching"
) -> Deployment:
    """Routes over ``replicas`` (those up): each type keeps the target's shares among them, else the current
    deployment's, else may go to any of them; a type the target leaves open stays open. Half a prefill/decode
    pool (its other half stopped or not started yet) routes as aggregated replicas: each engine serves a
    request whole meanwhile."""
    roles = {r.config.role for r in replicas}
    if ("prefill" in roles) != ("decode" in roles):
        replicas = [
            r if r.config.role == "aggregated" else replace(r, config=replace(r.config, role="aggregated"))
            for r in replicas
        ]
    up = {r.name for r in replicas}
    weights: dict[str, dict[str, float]] = {}
    for type_name, row in target.weights.items():
        for source in (row, current.weights.get(type_name, {})):
            kept = {n: w for n, w in source.items() if n in up and w > 0}
            if kept:
                weights[type_name] = kept
                break
    return Deployment(
        target.model or current.model,
        tuple(replicas),
        weights,
        target.type_edges or current.type_edges,
        note,
        target.router or current.router,
    )


def staged_switches(
    current: Deployment,
    switch_plan: SwitchPlan,
    model: ModelSpec,
    cluster: Cluster,
    *,
    min_serving_fraction: float = 0.5,
) -> list[Switch]:
    """``switch_plan`` as the simulator's switches, one per wave of ``plan_waves``: each stops its wave's
    replicas (draining them) and starts the next ones, routed as ``routing_deployment`` routes; apply each once
    the previous one has finished. A started replica serves its switch-plan delay (weights and restart) after
    its GPUs are free."""
    tr = diff_deployments(current, switch_plan.target, model=model, cluster=cluster)
    delay = {(s.label, frozenset(s.gpu_ids)): s.ready_s - s.release_s for s in switch_plan.started}
    slowest = max(delay.values(), default=0.0)
    final = {r.name: r for r in tr.target.replicas}
    up = list(current.replicas)
    out: list[Switch] = []
    for wave in plan_waves(tr, current, min_serving_fraction=min_serving_fraction):
        started = [final[n] for n in wave.start]
        up = [r for r in up if r.name not in wave.stop] + started
        delays = {r.name: delay.get((r.config.label, frozenset(r.gpu_ids)), slowest) for r in started}
        out.append(
            Switch(
                routing_deployment(tr.target, current, up, f"switching, wave {len(out) + 1}"),
                SwitchSchedule(drain_s=switch_plan.drain_s, start_delay_s=delays),
            )
        )
    if out and {r.name for r in up} == set(final):  # the last wave runs the target as planned
        out[-1] = Switch(tr.target, out[-1].schedule)
    return out

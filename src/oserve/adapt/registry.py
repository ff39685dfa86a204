"""The simulation policies by the name users type (``oserve simulate --policy``, ``oserve demo``).

A policy builder gets the scenario and the user's options (``SimContext``) and returns where the run starts and
what steers it (``PlannedRun``: a deployment, a ``sim.Policy``, the router). ``POLICIES`` maps names to builders;
adding one is one line::

    register_policy("dynamo", build_dynamo)

and it shows in ``--help`` and in the error an unknown name gets. The CLI only parses and prints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from oserve.adapt.core import ROUTER
from oserve.adapt.decide import DecisionConfig
from oserve.adapt.forecast import make_forecaster
from oserve.adapt.policy import Seed, StartCandidate, start_adaptive
from oserve.adapt.sources import DemandSource, ForecastSource, OracleSource
from oserve.errors import ConfigError, InfeasibleError
from oserve.planner import Slo, simulated_best_homogeneous, simulated_best_plan, vllm_default_deployment
from oserve.planner.disagg_plan import POOL_ROUTER, pool_options, pools_policy
from oserve.planner.dynamo import DYNAMO_ROUTER, dynamo_policy
from oserve.planner.isolate import long_types, simulated_best_isolation
from oserve.planner.slo_classes import SloClasses, type_slos
from oserve.sim import Policy, SimResult, StaticPolicy, simulate, with_classes
from oserve.spec import Cluster, Deployment, ModelSpec
from oserve.spec.router import RouterSpec
from oserve.trace import Trace, TypeGrid
from oserve.trace.classify import LONG_PROMPT_TOKENS

__all__ = [
    "POLICIES",
    "PlannedRun",
    "PolicyBuilder",
    "SimContext",
    "build_policy",
    "parse_policies",
    "policy_help",
    "policy_names",
    "register_policy",
    "simulate_policy",
    "simulate_run",
]


@dataclass(slots=True)
class SimContext:
    """What a policy builder gets: the scenario and the options the user gave."""

    trace: Trace
    model: ModelSpec
    cluster: Cluster
    deployment: Deployment | None
    router: str | None  # the user's --router; None lets each policy choose
    slo: dict[str, float]
    progress: Callable[[str], None]
    cache: dict[str, PlannedRun] = field(default_factory=dict)
    oracle_lengths: bool = False  # type and route by the true output lengths (the replay's hindsight)
    grid: TypeGrid | None = None  # the request types planning policies cut the trace into
    classes: SloClasses | None = None  # SLO classes (None or single: one SLO for all)
    #: OServe's start candidates, simulated once per context and shared by the policies that use them
    seeds: dict[str, list[Seed]] = field(default_factory=dict)

    def score(self, result: SimResult) -> SimResult:
        """``result`` scored per SLO class (unchanged for a single class)."""
        if self.classes is None or self.classes.single:
            return result
        names, _ = self.classes.assign(self.trace)
        return with_classes(result, names, self.classes.targets(), self.slo)


@dataclass(slots=True)
class PlannedRun:
    """A policy's starting deployment and switch policy; ``result`` when planning already simulated it."""

    deployment: Deployment
    policy: Policy | None
    result: SimResult | None = None
    router: str | RouterSpec = "weighted"  # the policy's router unless the user gave --router
    candidates: tuple[StartCandidate, ...] = ()  # an adaptive run's: every candidate its start check ranked


PolicyBuilder = Callable[[SimContext], PlannedRun]


def _static(ctx: SimContext) -> PlannedRun:
    """A fixed deployment: ``--deployment``, else the best homogeneous one by simulation of the whole trace."""
    if ctx.deployment is not None:
        spec = ctx.deployment.router  # the router the deployment was planned under (and its parameters)
        return PlannedRun(ctx.deployment, StaticPolicy(), router=spec if spec is not None else "weighted")
    if "static" not in ctx.cache:
        router = ctx.router or "weighted"
        deployment, result, _ = simulated_best_homogeneous(
            ctx.trace,
            ctx.model,
            ctx.cluster,
            router=router,
            slo=ctx.slo,
            progress=lambda label: ctx.progress(f"searching homogeneous: {label}"),
            oracle_lengths=ctx.oracle_lengths,
            scoring=ctx.score,  # ranked by the run's SLO classes, as every other policy is
        )
        ctx.cache["static"] = PlannedRun(deployment, StaticPolicy(), result, router)
    return ctx.cache["static"]


def _llumnix(ctx: SimContext) -> PlannedRun:
    """Llumnix (OSDI'24) on the static policy's deployment: each request to the freest replica, and requests
    migrated from overloaded replicas to free ones every 0.5 s (``routing.Llumnix``, ``sim.migration``)."""
    deployment = _static(ctx).deployment
    return PlannedRun(deployment, StaticPolicy(), router="llumnix")


def _oserve_static(ctx: SimContext) -> PlannedRun:
    """OServe's plan for the whole trace (its own type grid, the run's SLO), fixed: plans for the trace's median,
    p90 and p99 minute, each checked by simulation (and against ``static``'s deployment, in the run or not); the
    best in goodput, then p99 E2E, is kept, with the router it was checked under (least load among the replicas
    the plan lets serve a type, or the plan's weights). Where the trace has long-prompt types (``long_types``)
    and other traffic too, the best isolated deployment (``planner.isolate``) is a candidate as well: the capacity
    model does not see long prefills stalling the others, the simulation does."""
    if "oserve-static" not in ctx.cache:  # searched once per context: ``oserve`` starts from it too
        seeds = []
        if ctx.deployment is None:  # searched once per context, whether or not ``static`` is in the run
            base = _static(ctx)
            seeds.append(("best homogeneous", base.deployment, base.router, base.result))
        seeds.extend(_isolation_seeds(ctx))
        verified = simulated_best_plan(
            ctx.trace,
            ctx.model,
            ctx.cluster,
            Slo.from_dict(ctx.slo),
            seeds=seeds,
            progress=ctx.progress,
            oracle_lengths=ctx.oracle_lengths,
            grid=ctx.grid,
            scoring=ctx.score,
            type_slos=type_slos(ctx.classes, ctx.trace, ctx.grid) if ctx.classes and ctx.grid else None,
        )
        ctx.cache["oserve-static"] = PlannedRun(
            verified.deployment, StaticPolicy(), verified.result, verified.router
        )
    return ctx.cache["oserve-static"]


def _plan_seeds(ctx: SimContext) -> list[Seed]:
    """``oserve-static``'s verified plan as a seed of ``oserve``'s start: the planner's deployments for the
    trace's median, p90 and p99 minute, throughput and latency mode, each under the three plan-check routers,
    ranked by simulation (``simulated_best_plan``). ``start_adaptive`` only simulates its own plan (the p90 30 s
    bin, one router), so without this seed ``oserve`` could start worse than ``oserve-static`` (it did on the
    mixed rows). Searched once per context, shared with ``oserve-static``; none with ``--deployment``."""
    if ctx.deployment is not None:
        return []
    try:
        run = _oserve_static(ctx)
    except InfeasibleError:
        return []
    assert run.result is not None  # the plan check simulated it
    return [("oserve-static", run.deployment, run.router, run.result)]


def _long_threshold(ctx: SimContext) -> int:
    """The prompt length from which a type is long: ``LONG_PROMPT_TOKENS``, or an SLO class's prompt rule near it
    (``batch:prompt>=16000``: the grid's long bucket starts at the rule's edge)."""
    rules = ctx.classes.prompt_thresholds if ctx.classes is not None else ()
    return min((LONG_PROMPT_TOKENS, *(t for t in rules if t >= LONG_PROMPT_TOKENS // 2)))


def _isolation_seeds(ctx: SimContext) -> list[Seed]:
    """The best isolated deployment as a seed of the plan check, when the grid has long types and the trace has
    traffic both in them and in the rest; none (and no simulation) otherwise. Simulated once per context."""
    if "isolation" not in ctx.seeds:
        ctx.seeds["isolation"] = _isolation_search(ctx)
    return ctx.seeds["isolation"]


def _isolation_search(ctx: SimContext) -> list[Seed]:
    if ctx.deployment is not None or ctx.grid is None:
        return []
    threshold = _long_threshold(ctx)
    long = long_types(ctx.grid, threshold)
    is_long = ctx.trace.prompt_tokens >= threshold
    if not long or not is_long.any() or is_long.all():
        return []
    try:
        verified, _ = simulated_best_isolation(
            ctx.trace,
            ctx.model,
            ctx.cluster,
            Slo.from_dict(ctx.slo),
            grid=ctx.grid,
            long=long,
            scoring=ctx.score,
            progress=ctx.progress,
            oracle_lengths=ctx.oracle_lengths,
            type_slos=type_slos(ctx.classes, ctx.trace, ctx.grid) if ctx.classes else None,
        )
    except InfeasibleError:
        return []
    return [(verified.label, verified.deployment, verified.router, verified.result)]


def _pool_seeds(ctx: SimContext) -> list[Seed]:
    """OServe's P/D candidates for the trace (``planner.disagg_plan.pool_options``: the best whole-cluster pools
    and the per-type hybrid), each simulated once per context under ``POOL_ROUTER``, scored per SLO class."""
    if "pools" not in ctx.seeds:
        out: list[Seed] = []
        if ctx.deployment is None:
            try:
                options = pool_options(ctx.trace, ctx.model, ctx.cluster, Slo.from_dict(ctx.slo))
            except InfeasibleError:
                options = []
            for opt in options:
                ctx.progress(f"verifying {opt.label}")
                result = simulate(
                    ctx.trace,
                    opt.deployment,
                    ctx.model,
                    ctx.cluster,
                    router=POOL_ROUTER,
                    slo=ctx.slo,
                    oracle_lengths=ctx.oracle_lengths,
                )
                out.append((opt.label, opt.deployment, POOL_ROUTER, ctx.score(result)))
        ctx.seeds["pools"] = out
    return ctx.seeds["pools"]


ROUND_ROBIN = "round-robin"  # how a Kubernetes Service spreads requests over the pods behind it


def _vllm_fixed(ctx: SimContext, key: str, *, tp_per_node: bool) -> PlannedRun:
    """vLLM's default shape on the whole cluster, round-robin, simulated once per run (cached under ``key``)."""
    if key not in ctx.cache:
        deployment = vllm_default_deployment(ctx.model, ctx.cluster, tp_per_node=tp_per_node)
        router = ctx.router or ROUND_ROBIN
        ctx.progress(f"simulating {deployment.describe()}")
        result = simulate(
            ctx.trace,
            deployment,
            ctx.model,
            ctx.cluster,
            router=router,
            slo=ctx.slo,
            oracle_lengths=ctx.oracle_lengths,
        )
        ctx.cache[key] = PlannedRun(deployment, StaticPolicy(), result, router)
    return ctx.cache[key]


def _vllm(ctx: SimContext) -> PlannedRun:
    """vLLM as its docs deploy it: the smallest TP that holds the model with its whole context, replicas filling
    the cluster, requests spread round-robin (a Kubernetes Service), fixed."""
    return _vllm_fixed(ctx, "vllm", tp_per_node=False)


def _vllm_tp_node(ctx: SimContext) -> PlannedRun:
    """``vllm`` with TP = the GPUs of one node (one replica per node), round-robin, fixed."""
    return _vllm_fixed(ctx, "vllm-tp-node", tp_per_node=True)


def _adaptive(
    ctx: SimContext,
    source: DemandSource,
    config: DecisionConfig | None = None,
    *,
    router: str | None = None,
    seed: str = "static",
    candidates: bool = False,
    objective: str = "goodput",
) -> PlannedRun:
    """The adaptive controller from the best start by simulation of the trace (``start_adaptive``): the plan
    for the trace, the ``seed`` policy's deployment (``static``, or ``vllm`` for the reload baseline; built
    once per context whether or not that policy is in the run, so a policy starts alike alone or beside it) and, with ``candidates``, every other OServe candidate the trace gives: the best isolated
    deployment (``_isolation_seeds``), the P/D pools and hybrid (``_pool_seeds``) and ``oserve-static``'s verified
    plan (``_plan_seeds``), each simulated once per context."""
    seeds: list[Seed] = []
    if ctx.deployment is None:
        base = build_policy(seed, ctx)
        if base.result is not None:
            seeds.append((seed, base.deployment, base.router, ctx.score(base.result)))
    if candidates and ctx.deployment is None:
        seeds += _isolation_seeds(ctx) + _pool_seeds(ctx) + _plan_seeds(ctx)
    deployment, policy = start_adaptive(
        ctx.trace,
        ctx.model,
        ctx.cluster,
        Slo.from_dict(ctx.slo),
        source,
        config,
        prior=ctx.trace,  # planned on the trace's traffic, the information the static policies get
        seeds=seeds,  # and never started worse than a seed, where one was simulated
        progress=ctx.progress,
        router=router or ROUTER,
        scoring=ctx.score,
        objective=objective,
    )
    if any(r.config.role != "aggregated" for r in deployment.replicas):
        # a P/D pool won: the simulator runs pools under a static policy only, so it is held as it was
        # simulated (its cached result; no controller)
        _, dep, pool_router, result = next(s for s in seeds if s[0] == policy.start_label)
        return PlannedRun(dep, StaticPolicy(), result, pool_router, policy.start_candidates)
    return PlannedRun(deployment, policy, router=policy.router, candidates=policy.start_candidates)


def _oserve(ctx: SimContext) -> PlannedRun:
    """Adaptive: every minute, forecast each type's rate (EWMA over the last 15 minutes), re-plan, and switch when
    the gain over the next 5 minutes beats the switch plan's cost (30 s engine restarts, weights moved over the
    fastest links). Starts from the best of OServe's candidates by simulation of the trace: its plan, static's
    deployment, the best isolated deployment, the P/D pools and hybrid, ``oserve-static``'s plan."""
    return _adaptive(ctx, ForecastSource(make_forecaster("ewma")), candidates=True)


def _oserve_p99(ctx: SimContext) -> PlannedRun:
    """``oserve`` with a tail-first start: of its candidates, the lowest P99 E2E within 2% of static's goodput."""
    return _adaptive(ctx, ForecastSource(make_forecaster("ewma")), candidates=True, objective="p99")


def _oserve_oracle(ctx: SimContext) -> PlannedRun:
    """``oserve`` with the true future rates instead of a forecast: an upper bound for the adaptive policy."""
    return _adaptive(ctx, OracleSource(), candidates=True)


def _vllm_reload(ctx: SimContext) -> PlannedRun:
    """Re-plans as ``oserve`` does (same forecast, planner, decision), but every switch restarts its engines cold
    with the weights read from disk (no transfer over links, no sleep mode), and requests go round-robin."""
    config = DecisionConfig(weights_from="disk")
    return _adaptive(
        ctx, ForecastSource(make_forecaster("ewma")), config, router=ctx.router or ROUND_ROBIN, seed="vllm"
    )


#: Policies by the name users type (``--policy``); add one with ``register_policy`` (one line).
POLICIES: dict[str, PolicyBuilder] = {}


def register_policy(name: str, builder: PolicyBuilder) -> PolicyBuilder:
    """Make ``builder`` the policy ``name``; its docstring's first paragraph is its help. Returns the builder."""
    if not name or "," in name or name != name.strip():
        raise ConfigError(f"a policy name is a non-empty word without commas, got {name!r}")
    POLICIES[name] = builder
    return builder


def policy_names() -> tuple[str, ...]:
    return tuple(POLICIES)


def policy_help(name: str) -> str:
    """The first paragraph of the policy's docstring, on one line."""
    doc = (POLICIES[name].__doc__ or "").strip()
    return " ".join(doc.split("\n\n")[0].split())


def parse_policies(text: str) -> list[str]:
    """``static,oserve`` -> the names; an unknown one (or none) is a ``ConfigError`` listing the valid ones."""
    names = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in names if p not in POLICIES]
    if not names or unknown:
        raise ConfigError(
            f"unknown policy {', '.join(unknown) or '(none)'}; choose from {', '.join(POLICIES)}"
        )
    return names


def build_policy(name: str, ctx: SimContext) -> PlannedRun:
    """The starting deployment and switch policy of ``name`` for ``ctx``."""
    if name not in POLICIES:
        parse_policies(name)
    return POLICIES[name](ctx)


def simulate_policy(name: str, ctx: SimContext) -> tuple[PlannedRun, SimResult]:
    """Build ``name`` for ``ctx`` and simulate it on the trace (or take the simulation planning already ran),
    routed by ``ctx.router`` else the policy's own router, scored per SLO class: what ``oserve simulate`` and the
    headline benchmark run for every policy."""
    run = build_policy(name, ctx)
    return run, simulate_run(run, ctx)


def simulate_run(run: PlannedRun, ctx: SimContext) -> SimResult:
    """``run`` simulated on ``ctx``'s trace (or the simulation planning already ran), routed by ``ctx.router``
    else the run's own router, scored per SLO class."""
    result = run.result or simulate(
        ctx.trace,
        run.deployment,
        ctx.model,
        ctx.cluster,
        router=ctx.router or run.router,
        policy=run.policy,
        slo=ctx.slo,
        oracle_lengths=ctx.oracle_lengths,
    )
    return ctx.score(result)


register_policy("static", _static)
register_policy("oserve-static", _oserve_static)
register_policy("oserve", _oserve)
register_policy("oserve-oracle", _oserve_oracle)
register_policy("oserve-p99", _oserve_p99)
register_policy("llumnix", _llumnix)


def _dynamo(ctx: SimContext) -> PlannedRun:
    """NVIDIA Dynamo's SLA planner: a prefill/decode pool, prefill TP best per GPU within TTFT, decode TP best per
    GPU within TPOT, GPUs split by the load's prefill and decode work (``planner.dynamo``); on mixed GPU types
    profiled per type, every GPU held."""
    return PlannedRun(dynamo_policy(ctx.trace, ctx.model, ctx.cluster, ctx.slo), None, router=DYNAMO_ROUTER)


def _oserve_disagg(ctx: SimContext) -> PlannedRun:
    """OServe's simulation-checked plan with prefill/decode pools and a per-type hybrid among the candidates
    (``planner.disagg_plan``), fixed."""
    return PlannedRun(*pools_policy(ctx.trace, ctx.model, ctx.cluster, ctx.slo))


register_policy("dynamo", _dynamo)
register_policy("oserve-disagg", _oserve_disagg)
register_policy("vllm", _vllm)
register_policy("vllm-tp-node", _vllm_tp_node)
register_policy("vllm-reload", _vllm_reload)

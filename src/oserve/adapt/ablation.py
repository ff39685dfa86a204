"""The paper's ablation as registry runs: vLLM's default deployment, then OServe's parts added one at a time.

The steps (``STEPS``), each a ``PlannedRun`` on one ``SimContext`` (``benchmarks/ablation.py`` simulates them):

- ``vllm``: the registry's ``vllm``: vLLM's default shape filling the cluster, round-robin;
- ``+hetero``: OServe's planned deployment (``oserve-static``'s: TP and GPU type per replica as the plan mixes
  them), fixed, behind a type-blind router (``BLIND_ROUTER``, least requests: what a plain least-request balancer
  in front of the replicas does — Envoy's ``LEAST_REQUEST``, llm-d's queue scorer); round-robin, a Kubernetes
  Service's spread, would send a TP1 replica as many requests as a TP4 one and charge the router's fault to the
  deployment;
- ``+routing``: the same deployment under the type-aware router its plan was checked with (``oserve-static``):
  each request type only to the replicas the plan gives it, by live load or by the plan's weights;
- ``+switching``: the adaptive ``oserve`` (forecast, re-plan, switch). It starts from the best of OServe's
  candidates (its plan, ``static``'s deployment, the best isolated one, the P/D pools and hybrid), which need not
  be ``+routing``'s deployment; the benchmark reports both.

``+hetero`` and ``+routing`` hold one deployment and differ only in their router, so their ratio is what
routing by type is worth on that deployment.
"""

from __future__ import annotations

from collections.abc import Sequence

from oserve.adapt.registry import PlannedRun, SimContext, build_policy
from oserve.errors import ConfigError
from oserve.sim import StaticPolicy
from oserve.spec import Deployment

__all__ = [
    "BLIND_ROUTER",
    "STEPS",
    "TYPE_BLIND_ROUTERS",
    "ablation_steps",
    "is_heterogeneous",
]

STEPS = ("vllm", "+hetero", "+routing", "+switching")
BLIND_ROUTER = "least-requests"
#: the registered routers that ignore request types (and the plan's weights): ``+hetero`` may use these only
TYPE_BLIND_ROUTERS = ("least-requests", "round-robin", "least-tokens")


def ablation_steps(ctx: SimContext, blind_routers: Sequence[str] = (BLIND_ROUTER,)) -> dict[str, PlannedRun]:
    """The runs of ``STEPS`` on ``ctx`` (``+hetero`` under ``blind_routers[0]``), then, for comparison, one
    ``+hetero/ROUTER`` per further type-blind router (the same deployment under another blind router) and
    ``vllm/ROUTER``: vLLM's deployment under ``+hetero``'s router, which splits ``+hetero``'s gain over ``vllm``
    into the router's (round-robin to least requests) and the deployment's."""
    if ctx.router is not None:
        raise ConfigError(f"the ablation chooses each step's router; got a fixed router {ctx.router!r}")
    if ctx.deployment is not None:
        raise ConfigError("the ablation plans its own deployments; got a fixed --deployment")
    if not blind_routers:
        raise ConfigError(f"the ablation needs a type-blind router, one of {', '.join(TYPE_BLIND_ROUTERS)}")
    aware = [r for r in blind_routers if r not in TYPE_BLIND_ROUTERS]
    if aware:
        raise ConfigError(
            f"router {', '.join(aware)} is not one of the type-blind routers +hetero takes: "
            f"{', '.join(TYPE_BLIND_ROUTERS)}"
        )
    routed = build_policy("oserve-static", ctx)  # planned and simulation-checked once, shared by two steps
    vllm, (blind, *others) = build_policy("vllm", ctx), dict.fromkeys(blind_routers)
    steps = {
        "vllm": vllm,
        # no ``result``: +routing's simulation ran under its router; this run is simulated under its own
        "+hetero": PlannedRun(routed.deployment, StaticPolicy(), router=blind),
        "+routing": routed,
        "+switching": build_policy("oserve", ctx),
    }
    for router in others:
        steps[f"+hetero/{router}"] = PlannedRun(routed.deployment, StaticPolicy(), router=router)
    if blind != vllm.router:
        steps[f"vllm/{blind}"] = PlannedRun(vllm.deployment, StaticPolicy(), router=blind)
    return steps


def is_heterogeneous(deployment: Deployment) -> bool:
    """Whether the replicas differ in GPU type or shape (TP, PP)."""
    shapes = {(r.config.gpu.name, r.config.tp, r.config.pp) for r in deployment.replicas}
    return len(shapes) > 1

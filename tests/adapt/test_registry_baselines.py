"""The paper's baselines as registered policies: ``vllm`` (smallest TP with room for the model's context, replicas
filling the cluster, round-robin), ``vllm-tp-node`` (TP = GPUs per node) and ``vllm-reload`` (oserve's re-planning,
every switch reloaded from disk, round-robin)."""

from __future__ import annotations

import pytest

from factories import make_trace
from oserve.adapt.decide import DecisionConfig
from oserve.adapt.policy import AdaptivePolicy
from oserve.adapt.registry import POLICIES, ROUND_ROBIN, SimContext, build_policy
from oserve.adapt.switch import COLD_RESTART_S, price_switch
from oserve.errors import ConfigError
from oserve.perf import CostModel
from oserve.planner import default_slo, place
from oserve.planner.baselines import vllm_default_deployment
from oserve.planner.placement import candidate_configs
from oserve.sim import StaticPolicy
from oserve.spec import Deployment, ModelSpec, ReplicaConfig, get_model, parse_cluster
from oserve.spec.gpu import get_gpu

LLAMA31_70B = get_model("llama-3.1-70b")
LLAMA3_8B = get_model("llama-3-8b")


def context(model: ModelSpec, cluster: str, n: int = 60) -> SimContext:
    cl = parse_cluster(cluster)
    return SimContext(
        make_trace(n, rate_rps=2.0, prompt_mean_tokens=600.0, output_mean_tokens=60.0),
        model,
        cl,
        None,
        None,
        default_slo(model, cl).to_dict(),
        lambda _msg: None,
    )


def test_the_baselines_are_registered() -> None:
    assert {"vllm", "vllm-tp-node", "vllm-reload"} <= set(POLICIES)


@pytest.mark.parametrize(
    ("model", "cluster", "tp", "count"),
    [  # a smaller TP holds the weights but not the model's whole context: vLLM (no --max-model-len) refuses it
        (get_model("qwen2.5-32b"), "2x8xH100", 2, 8),
        (LLAMA31_70B, "1x8xL40S", 8, 1),
    ],
)
def test_vllm_takes_the_smallest_tp_with_room_for_the_context_and_fills_the_cluster(
    model, cluster, tp, count
) -> None:
    ctx = context(model, cluster, n=20)
    run = build_policy("vllm", ctx)
    configs, _ = candidate_configs(model, ctx.cluster, pps=(1,))
    fits = sorted(c.tp for c in configs)
    full = sorted(
        c.tp for c in configs if CostModel(model, c).memory.max_model_len >= model.max_position_embeddings
    )
    assert fits[0] < full[0] == tp
    assert {r.config.tp for r in run.deployment.replicas} == {tp}
    assert len(run.deployment.replicas) == count
    assert sorted(g for r in run.deployment.replicas for g in r.gpu_ids) == list(range(ctx.cluster.num_gpus))
    assert run.router == ROUND_ROBIN and isinstance(run.policy, StaticPolicy)
    assert run.result is not None and run.result.summary["completed"] == len(ctx.trace)
    assert build_policy("vllm", ctx) is run  # simulated once per run


def test_vllm_on_a_mixed_cluster_uses_every_gpu_type() -> None:
    dep = vllm_default_deployment(get_model("llama-3.1-8b"), parse_cluster("1x4xH100+1x4xA100-80GB"))
    assert {(r.config.gpu.name, r.config.tp) for r in dep.replicas} == {
        ("H100-SXM-80GB", 1),
        ("A100-80GB", 1),
    }
    assert len(dep.replicas) == 8


@pytest.mark.parametrize(
    ("model", "cluster", "tp", "count"),
    [
        (LLAMA3_8B, "2x8xH100", 8, 2),
        (LLAMA31_70B, "2x8xH100", 8, 2),
        (get_model("llama-3.1-8b"), "1x4xH100+1x4xA100-80GB", 4, 2),
    ],
)
def test_vllm_tp_node_has_tp_equal_to_the_gpus_per_node(model, cluster, tp, count) -> None:
    ctx = context(model, cluster, n=20)
    run = build_policy("vllm-tp-node", ctx)
    assert {r.config.tp for r in run.deployment.replicas} == {tp}
    assert len(run.deployment.replicas) == count
    assert {len({ctx.cluster.gpus[g].node for g in r.gpu_ids}) for r in run.deployment.replicas} == {1}
    assert run.router == ROUND_ROBIN


def test_the_reload_switch_costs_the_disk_read_of_every_started_replica_plus_a_cold_restart() -> None:
    h100 = get_gpu("H100")
    for disk in (2.0, 5.0):
        cluster = parse_cluster({"nodes": [{"gpu": "H100", "count": 8, "disk_gb_per_s": disk}]})
        current = Deployment(LLAMA3_8B.name, place(cluster, [(ReplicaConfig(h100, tp=1), 8)]))
        target = Deployment(LLAMA3_8B.name, place(cluster, [(ReplicaConfig(h100, tp=2), 4)]))
        reload = price_switch(current, target, LLAMA3_8B, cluster, weights="disk")
        moved = price_switch(current, target, LLAMA3_8B, cluster, weights="links")
        # four TP2 replicas read the whole model each from the node's one disk, then start cold
        assert sum(s.needed_bytes for s in reload.started) == pytest.approx(
            4 * LLAMA3_8B.weight_bytes, rel=1e-3
        )
        expected = 4 * LLAMA3_8B.weight_bytes / (disk * 1e9) + COLD_RESTART_S
        assert reload.duration_s == pytest.approx(expected, rel=1e-3)
        assert reload.bytes_by_link().keys() == {"disk"}
        # OServe keeps each GPU's half of its old shard in place: the cold restart alone
        assert moved.duration_s == pytest.approx(COLD_RESTART_S)
        assert reload.duration_s > moved.duration_s
        assert reload.capacity_lost_gpu_s > moved.capacity_lost_gpu_s
    with pytest.raises(ConfigError, match="links or disk"):
        price_switch(current, target, LLAMA3_8B, cluster, weights="nvme")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="weights_from"):
        DecisionConfig(weights_from="nvme")  # type: ignore[arg-type]


def test_vllm_reload_replans_as_oserve_but_reloads_from_disk_and_routes_round_robin() -> None:
    ctx = context(LLAMA3_8B, "1x8xH100", n=40)
    run = build_policy("vllm-reload", ctx)
    assert isinstance(run.policy, AdaptivePolicy)
    assert run.router == run.policy.router == run.policy.core.router == ROUND_ROBIN
    assert run.policy.config.weights_from == "disk"
    assert run.policy.config.restart_s == COLD_RESTART_S  # no sleep mode
    oserve = build_policy("oserve", ctx).policy
    assert isinstance(oserve, AdaptivePolicy)
    assert oserve.config.weights_from == "links" and oserve.router != ROUND_ROBIN
    assert type(oserve.source) is type(run.policy.source)  # same forecast
    assert "vllm" in ctx.cache  # seeded from the vllm baseline's simulation, as oserve is from static's


def test_the_decision_prices_a_reload_from_disk_higher_than_moving_weights() -> None:
    from oserve.adapt.decide import decide
    from oserve.planner import TypeDemand, plan

    cluster = parse_cluster("1x8xH100")
    slo = default_slo(LLAMA3_8B, cluster)

    def demand(rate: float) -> list[TypeDemand]:
        return [TypeDemand("short", rate, 300.0, 60.0), TypeDemand("long", rate / 4, 3000.0, 400.0)]

    planned = plan(LLAMA3_8B, cluster, demand(0.9 * plan(LLAMA3_8B, cluster, demand(1.0), slo).alpha), slo)
    current = Deployment(LLAMA3_8B.name, place(cluster, [(ReplicaConfig(get_gpu("H100"), tp=8), 1)]))
    moved = decide(600.0, current, planned, LLAMA3_8B, cluster, DecisionConfig())
    reload = decide(600.0, current, planned, LLAMA3_8B, cluster, DecisionConfig(weights_from="disk"))
    assert moved.plan is not None and reload.plan is not None
    assert moved.plan.method == "transfer" and reload.plan.method == "reload from disk"
    assert reload.plan.duration_s > moved.plan.duration_s
    assert reload.cost_requests > moved.cost_requests > 0


def test_the_simulated_waves_of_a_reload_wait_for_the_disk() -> None:
    from oserve.adapt.waves import staged_switches

    cluster, h100 = parse_cluster("1x8xH100"), get_gpu("H100")
    current = Deployment(LLAMA3_8B.name, place(cluster, [(ReplicaConfig(h100, tp=1), 8)]))
    target = Deployment(LLAMA3_8B.name, place(cluster, [(ReplicaConfig(h100, tp=2), 4)]))
    one_replica_s = LLAMA3_8B.weight_bytes / (cluster.nodes[0].disk_gb_per_s * 1e9)
    for weights, low, high in (
        ("links", COLD_RESTART_S, COLD_RESTART_S),
        ("disk", COLD_RESTART_S + one_replica_s, COLD_RESTART_S + 4 * one_replica_s * 1.001),
    ):
        plan = price_switch(current, target, LLAMA3_8B, cluster, weights=weights)
        delays = [
            d
            for wave in staged_switches(current, plan, LLAMA3_8B, cluster)
            for d in wave.schedule.start_delay_s.values()
        ]
        assert len(delays) == 4 and all(low - 1e-6 <= d <= high + 1e-6 for d in delays), (weights, delays)

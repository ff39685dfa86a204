"""Homogeneous baselines: candidate enumeration, the vLLM default, and selection by an evaluation callback."""

from __future__ import annotations

import pytest

from oserve.errors import InfeasibleError
from oserve.perf import CostModel
from oserve.planner import best_homogeneous, homogeneous_candidates, vllm_default_deployment
from oserve.spec import get_model, parse_cluster


def test_candidates_fit_and_use_whole_cluster() -> None:
    cluster = parse_cluster("2x8xH100")
    cands = homogeneous_candidates(get_model("llama-2-70b"), cluster)
    labels = {c.config.label for c in cands}
    assert "H100-SXM-80GB:tp4" in labels and "H100-SXM-80GB:tp8" in labels
    # 70B in bf16 leaves KV room for under a thousand tokens on two H100s: a short max_model_len
    tp2 = next(c.config for c in cands if c.config.label == "H100-SXM-80GB:tp2")
    assert 0 < CostModel(get_model("llama-2-70b"), tp2).memory.max_model_len < 1024
    for c in cands:
        c.deployment.validate(cluster)
        assert c.deployment.num_gpus == cluster.num_gpus


def test_vllm_default_is_smallest_fitting_tp() -> None:
    d = vllm_default_deployment(get_model("llama-3-8b"), parse_cluster("1x8xH100"))
    assert {r.config.tp for r in d.replicas} == {1} and len(d.replicas) == 8
    # vLLM started without --max-model-len needs the model's whole context: TP2 holds under 1k tokens of 70B
    d = vllm_default_deployment(get_model("llama-2-70b"), parse_cluster("1x8xH100"))
    assert {r.config.tp for r in d.replicas} == {4} and len(d.replicas) == 2


def test_infeasible_model_explains_why() -> None:
    with pytest.raises(InfeasibleError, match=r"fits no replica shape.*KV cache holds 0 tokens"):
        homogeneous_candidates(get_model("llama-2-70b"), parse_cluster("1x1xA10G"))


def test_best_homogeneous_picks_the_highest_score() -> None:
    def score(deployment) -> float:  # prefers more replicas, as a throughput-bound evaluation would
        return float(len(deployment.replicas))

    best, scored = best_homogeneous(get_model("llama-3-8b"), parse_cluster("1x8xH100"), score)
    assert best.score == max(c.score for c in scored) == 8.0
    assert best.config.tp == 1 and best.config.pp == 1  # ties broken towards fewer GPUs per replica


def test_simulated_best_homogeneous_returns_the_winners_own_simulation() -> None:
    import numpy as np

    from oserve.planner import simulated_best_homogeneous
    from oserve.sim import simulate
    from oserve.trace import Trace

    rng = np.random.default_rng(0)
    trace = Trace.from_arrays(
        np.sort(rng.uniform(0, 30, 200)), rng.integers(100, 3000, 200), rng.integers(5, 200, 200)
    )
    model, cluster = get_model("llama-3-8b"), parse_cluster("1x4xH100")
    best, result, searched = simulated_best_homogeneous(trace, model, cluster)
    assert searched == len(homogeneous_candidates(model, cluster))
    again = simulate(trace, best, model, cluster)
    assert result.records.equals(again.records)  # the search's run is the winner's, not another candidate's


MIXED = "1x8xH100+1x8xA100-80GB"


@pytest.mark.parametrize("model", ["llama-2-70b", "llama-3-8b"])
def test_on_a_mixed_cluster_every_baseline_uses_every_gpu(model: str) -> None:
    """One shape per GPU type: every homogeneous candidate and vLLM's default hold all 16 GPUs, both types."""
    spec, cluster = get_model(model), parse_cluster(MIXED)
    cands = homogeneous_candidates(spec, cluster)
    assert len(cands) >= 3
    for c in cands:
        c.deployment.validate(cluster)
        assert c.deployment.num_gpus == cluster.num_gpus
        assert {r.config.gpu.name for r in c.deployment.replicas} == {g.name for g in cluster.gpu_types()}
        assert (c.config.tp, c.config.pp) in {(k.tp, k.pp) for k in c.configs}
        assert len({r.name for r in c.deployment.replicas}) == len(c.deployment.replicas)
    assert len({c.configs for c in cands}) == len(cands)
    default = vllm_default_deployment(spec, cluster)
    default.validate(cluster)
    assert default.num_gpus == cluster.num_gpus
    for gpu in cluster.gpu_types():
        tps = {r.config.tp for r in default.replicas if r.config.gpu.name == gpu.name}
        assert len(tps) == 1 and all(r.config.pp == 1 for r in default.replicas)


def test_plan_baselines_on_a_mixed_cluster_use_every_gpu(shared_traces) -> None:
    from oserve.planner import demands_from_trace, plan
    from oserve.planner.slo import default_slo
    from oserve.trace import load_trace

    spec, cluster = get_model("llama-2-70b"), parse_cluster(MIXED)
    trace = load_trace(shared_traces / "azure_conv_2023.csv")
    demands, grid = demands_from_trace(trace)
    result = plan(spec, cluster, demands, default_slo(spec, cluster), grid=grid)
    assert result.baseline.num_gpus == cluster.num_gpus
    assert {r.config.gpu.name for r in result.baseline.replicas} == {g.name for g in cluster.gpu_types()}
    assert result.deployment.num_gpus == cluster.num_gpus
    assert result.alpha >= result.baseline_alpha * (1 - 1e-9)


def test_simulated_best_homogeneous_ranks_by_the_callers_scoring() -> None:
    """With SLO classes the baseline must be the best under the run's own scoring, not the single-SLO one."""
    import dataclasses

    import numpy as np

    from oserve.planner import simulated_best_homogeneous
    from oserve.trace import Trace

    rng = np.random.default_rng(1)
    trace = Trace.from_arrays(
        np.sort(rng.uniform(0, 20, 100)), rng.integers(100, 2000, 100), rng.integers(5, 100, 100)
    )
    model, cluster = get_model("llama-3-8b"), parse_cluster("1x4xH100")

    def fewest_replicas(result):  # a scoring that prefers the fewest replicas
        summary = {**result.summary, "goodput_rps": -float(len(result.replicas))}
        return dataclasses.replace(result, summary=summary)

    best, result, _ = simulated_best_homogeneous(trace, model, cluster, scoring=fewest_replicas)
    assert len(best.replicas) == 1 and result.summary["goodput_rps"] == -1.0


def test_simulated_best_homogeneous_ranks_as_oserve_ranks_its_candidates() -> None:
    """The baseline is chosen by ``verify.best_index``, as oserve's start: within the goodput tie the lower p99
    wins, not the last fraction of a percent of goodput."""
    import dataclasses

    import numpy as np

    from oserve.planner import simulated_best_homogeneous
    from oserve.trace import Trace

    rng = np.random.default_rng(2)
    trace = Trace.from_arrays(
        np.sort(rng.uniform(0, 20, 100)), rng.integers(100, 2000, 100), rng.integers(5, 100, 100)
    )
    model, cluster = get_model("llama-3-8b"), parse_cluster("1x4xH100")

    def more_replicas_a_hair_more_goodput_and_a_worse_tail(result):
        n = len(result.replicas)
        summary = {**result.summary, "goodput_rps": 10.0 + 0.01 * n, "e2e_p99": float(n), "e2e_mean": 1.0}
        return dataclasses.replace(result, summary=summary)

    best, _, tried = simulated_best_homogeneous(
        trace, model, cluster, scoring=more_replicas_a_hair_more_goodput_and_a_worse_tail
    )
    assert tried >= 3 and len(best.replicas) == 1  # 4 x TP1 has 0.3% more goodput, 4x the p99: TP4 wins

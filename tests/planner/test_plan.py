"""``plan`` end to end on the real traces, mixed clusters and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from oserve.errors import ConfigError, InfeasibleError
from oserve.planner import Slo, TypeDemand, default_slo, demands_from_trace, parse_rates, plan
from oserve.sim import simulate
from oserve.spec import get_model, parse_cluster
from oserve.trace import TypeGrid, load_trace, window

LLAMA70, LLAMA8 = get_model("llama-2-70b"), get_model("llama-3-8b")


@pytest.fixture(scope="module")
def conv_plan(shared_traces):
    trace = load_trace(shared_traces / "azure_conv_2023.csv")
    cluster = parse_cluster("2x8xH100")
    demands, grid = demands_from_trace(trace)
    return trace, cluster, plan(LLAMA70, cluster, demands, default_slo(LLAMA70, cluster), grid=grid)


def test_the_plan_beats_or_matches_every_baseline_and_fits_the_cluster(conv_plan) -> None:
    _trace, cluster, result = conv_plan
    assert result.alpha >= result.baseline_alpha * (1 - 1e-9)
    assert result.baseline_alpha >= result.vllm_default_alpha * (1 - 1e-9)
    result.deployment.validate(cluster)
    assert result.deployment.num_gpus == cluster.num_gpus  # idle GPUs filled
    for row in result.deployment.weights.values():
        assert sum(row.values()) == pytest.approx(1.0)
    names = {d.name for d in result.demands if d.rate_rps > 0}
    assert set(result.deployment.weights) == names


def test_the_plan_is_what_the_simulator_replays(conv_plan) -> None:
    """The deployment carries its type grid, so the simulator routes with the plan's weights."""
    trace, cluster, result = conv_plan
    assert TypeGrid.from_edges(result.deployment.type_edges).names == [d.name for d in result.demands]
    sim = simulate(window(trace, 0, 120), result.deployment, LLAMA70, cluster, slo=result.slo.to_dict())
    assert sim.summary["dropped"] == 0
    for type_name, rows in sim.records.groupby("type_name"):
        assert set(rows["replica"]) <= set(result.deployment.weights[type_name])


def test_json_has_the_documented_fields(conv_plan) -> None:
    d = conv_plan[2].to_dict()
    assert {"alpha", "baseline_alpha", "solve_seconds", "replicas"} <= set(d)
    r = d["replicas"][0]
    assert {"gpu", "tp", "pp", "gpus", "weights"} <= set(r)


@pytest.mark.parametrize("method", ["milp", "refine"])
def test_both_methods_plan_a_mixed_cluster_using_both_gpu_types(method) -> None:
    cluster = parse_cluster("1x8xH100+1x8xA100-80GB")
    demands, grid = parse_rates("300:600=6,3000:40=4,800:150=8")
    result = plan(LLAMA8, cluster, demands, default_slo(LLAMA8, cluster), grid=grid, method=method)
    result.deployment.validate(cluster)
    assert {r.config.gpu.name for r in result.deployment.replicas} == {"H100-SXM-80GB", "A100-80GB"}
    assert result.method == method
    assert result.alpha >= result.baseline_alpha * (1 - 1e-9)


def test_refinement_lands_within_a_few_percent_of_the_milp() -> None:
    cluster = parse_cluster("4x8xH100")
    demands, grid = parse_rates("300:600=30,3000:40=20,800:150=40,6000:300=5")
    slo = default_slo(LLAMA70, cluster)
    exact = plan(LLAMA70, cluster, demands, slo, grid=grid, method="milp")
    heuristic = plan(LLAMA70, cluster, demands, slo, grid=grid, method="refine")
    assert heuristic.alpha <= exact.alpha * (1 + 1e-6)
    assert heuristic.alpha >= 0.9 * exact.alpha


def test_a_model_that_fits_nowhere_is_explained() -> None:
    with pytest.raises(InfeasibleError, match="fits no replica shape"):
        plan(LLAMA70, parse_cluster("1x1xA10G"), [TypeDemand("t", 1.0, 500, 100)], Slo(2, 0.2))


def test_an_empty_workload_is_explained() -> None:
    with pytest.raises(InfeasibleError, match="empty workload"):
        plan(LLAMA8, parse_cluster("1x8xH100"), [TypeDemand("t", 0.0, 500, 100)], Slo(2, 0.2))


def test_an_slo_below_the_unloaded_latency_is_planned_best_effort_and_names_the_type_and_the_floor() -> None:
    demands = [TypeDemand("long", 1.0, 8000, 100), TypeDemand("short", 2.0, 300, 100)]
    result = plan(LLAMA8, parse_cluster("1x8xH100"), demands, Slo(0.05, 0.2))
    (effort,) = result.best_effort
    assert effort.type == "long" and 1 < effort.relax < float("inf")
    assert "TTFT" in effort.reason and "best-effort" in effort.reason
    assert result.alpha > 0 and "long" in result.deployment.weights and "short" in result.deployment.weights
    assert result.to_dict()["best_effort"][0]["type"] == "long"
    # the relaxed capacity stands in for the type's: every config it names serves it
    assert np.any(result.mu_rps[0] > 0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no rates"),
        ("512=4", "expected PROMPT"),
        ("512:0=4", ">= 1 token"),
        ("1:1=nan", "number"),
        ("500:100=1,500:100=2", "same type"),
    ],
)
def test_bad_rates_are_refused(text, message) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_rates(text)


def test_rates_build_a_grid_that_types_each_given_shape_apart() -> None:
    demands, grid = parse_rates("512:128=4,4096:32=1.5,300:800=2")
    assert len(demands) == 3
    index = grid.classify_lengths(np.array([512, 4096, 300]), np.array([128, 32, 800]))
    assert [grid.names[i] for i in index] == [
        d.name for d in sorted(demands, key=lambda d: [512, 4096, 300].index(int(d.prompt_tokens)))
    ]


def test_peak_quantile_provisions_for_busy_minutes_with_the_same_mix(shared_traces) -> None:
    trace = load_trace(shared_traces / "azure_code_2023.csv")
    mean, grid = demands_from_trace(trace)
    peak, _ = demands_from_trace(trace, grid, peak_quantile=0.9)
    ratio = [p.rate_rps / m.rate_rps for p, m in zip(peak, mean, strict=True) if m.rate_rps > 0]
    assert min(ratio) == pytest.approx(max(ratio))  # the mix is kept
    assert ratio[0] > 1.5  # the code hour's p90 minute is far above its mean
    with pytest.raises(ConfigError, match="peak quantile"):
        demands_from_trace(trace, grid, peak_quantile=1.5)

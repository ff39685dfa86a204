"""``benchmarks/headline.py``'s arithmetic: the ratios and the max sustainable load on the load grid."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "headline.py"
_SPEC = importlib.util.spec_from_file_location("headline", _PATH)
headline = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(headline)

LOADS = [0.6, 0.9, 1.2]


def _run(goodput: float, p99: float, attainment: float) -> dict:
    return {"goodput_rps": goodput, "e2e_p99": p99, "slo_attainment": attainment}


def test_max_load_interpolates_where_attainment_crosses_the_target() -> None:
    assert headline.max_load(LOADS, [1.0, 0.95, 0.85]) == pytest.approx(1.05)
    assert headline.max_load(LOADS, [1.0, 0.99, 0.95]) == 1.2  # never crosses: the grid's end
    assert headline.max_load(LOADS, [0.45, 0.3, 0.2]) == pytest.approx(0.3)  # below already at the first load


def test_ratios_are_baseline_over_policy_for_p99_and_policy_over_baseline_otherwise() -> None:
    base = [_run(10, 20, 1.0), _run(12, 30, 0.95), _run(12, 60, 0.85)]
    pol = [_run(10, 10, 1.0), _run(15, 15, 0.99), _run(16, 20, 0.95)]
    r = headline.ratios(base, pol, LOADS, 1)
    assert r["p99_ratio"] == pytest.approx(2.0)
    assert r["goodput_ratio"] == pytest.approx(1.25)
    assert r["max_load_ratio"] == pytest.approx(1.2 / 1.05)


def test_a_baseline_without_goodput_loses_to_any_policy_with_some() -> None:
    zero = [_run(0, 100, 0.0)] * 3
    assert headline.ratios(zero, [_run(5, 10, 0.5)] * 3, LOADS, 1)["goodput_ratio"] == float("inf")
    assert headline.ratios(zero, zero, LOADS, 1)["goodput_ratio"] == 1.0


def test_setup_groups_expand_in_order_once() -> None:
    assert headline.setups_of("long,llama-3.1-8b@1x8xH100") == list(headline.LONG_SETUPS)
    with pytest.raises(SystemExit):
        headline.setups_of("nonsense")


def test_class_latency_is_each_class_p99_and_ratios_carry_it(shared_traces) -> None:
    """On a real two-class simulation, each class's P99 E2E / TTFT is the 99th percentile over that class's completed
    records alone; the ratios then carry them per class beside the P99 over all."""
    if not (shared_traces / "mooncake_synthetic.jsonl").is_file():
        pytest.skip("mooncake trace not found")
    from factories import long_blend
    from oserve.sim import simulate
    from oserve.spec import Deployment, ReplicaConfig, get_gpu, get_model, parse_cluster

    spec, cluster = get_model("llama-3.1-8b"), parse_cluster("1x8xH100")
    trace = long_blend(shared_traces, 60.0, 1.0)
    ctx = headline.scenario_context(["static"], trace, spec, cluster, "two-class")
    deployment = Deployment.homogeneous(spec.name, cluster, ReplicaConfig(get_gpu("H100"), tp=4))
    result = ctx.score(simulate(trace, deployment, spec, cluster, router="least-requests", slo=ctx.slo))
    by_class = headline.class_latency(result.records)
    assert set(by_class) == set(result.summary["slo_attainment_by_class"])
    assert len(by_class) == 2  # the blend's Mooncake prompts from 16k tokens are batch, the rest default
    records = result.records
    done = records[
        records["finish_s"].notna() & ~records["dropped"].astype(bool) & ~records["rejected"].astype(bool)
    ]
    for name, got in by_class.items():  # computed here from the records, not by summarize
        part = done[done["slo_class"] == name]
        assert got["e2e_p99"] == pytest.approx(np.percentile(part["finish_s"] - part["arrival_s"], 99))
        assert got["ttft_p99"] == pytest.approx(np.percentile(part["first_token_s"] - part["arrival_s"], 99))
    # a quantile of the mix lies between the classes' quantiles
    assert max(v["e2e_p99"] for v in by_class.values()) >= result.summary["e2e_p99"] * 0.99
    base = [{**_run(10, 4, 1.0), "latency_by_class": by_class}] * 3
    half = {k: {m: v / 2 for m, v in d.items()} for k, d in by_class.items()}
    faster = [{**_run(10, 2, 1.0), "latency_by_class": half}] * 3
    r = headline.ratios(base, faster, LOADS, 1)
    assert r["p99_ratio"] == pytest.approx(2.0)
    assert all(
        v == pytest.approx({"e2e_p99": 2.0, "ttft_p99": 2.0}) for v in r["p99_ratio_by_class"].values()
    )
    assert "p99_ratio_by_class" not in headline.ratios(base, [_run(10, 2, 1.0)] * 3, LOADS, 1)

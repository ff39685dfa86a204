"""Context length: the planner never prices a type on a config whose max_model_len cannot hold it, the plan
reports the types nothing holds, and the simulator rejects what vLLM would (the real Mooncake trace's long
prompts on Llama-2's 4,096-token context)."""

from __future__ import annotations

import numpy as np
import pytest

from factories import make_replica
from oserve.perf import CostModel
from oserve.planner import Slo, demands_from_trace, plan
from oserve.planner.capacity import CONTEXT_QUANTILE, CapacityModel
from oserve.sim import simulate
from oserve.spec import ReplicaConfig, get_model, parse_cluster
from oserve.trace import load_trace, window

LLAMA2_70B = get_model("llama-2-70b")
SLO = Slo(ttft_s=10.0, tpot_s=0.2)


@pytest.fixture(scope="module")
def mooncake(shared_traces):
    return window(load_trace(shared_traces / "mooncake_synthetic.jsonl"), 0.0, 300.0)


@pytest.fixture(scope="module")
def mooncake_plan(mooncake):
    cluster = parse_cluster("2x8xH100")
    demands, grid = demands_from_trace(mooncake, num_types=6)
    return cluster, plan(LLAMA2_70B, cluster, demands, SLO, grid=grid, pps=(1,))


def _tp(tp: int) -> ReplicaConfig:
    return make_replica("h100", tp=tp)


def test_a_config_too_short_for_a_type_has_no_capacity() -> None:
    capm = CapacityModel(LLAMA2_70B, SLO)
    tp2 = capm.timer(_tp(2)).cost_model
    limit = tp2.memory.max_model_len
    assert 0 < limit < 1024  # two H100s hold under 1k tokens of 70B's KV
    assert capm.capacity(_tp(2), limit - 64, 32).serves
    cap = capm.capacity(_tp(2), limit, 32)
    assert cap.rate_rps == 0 and cap.limit == "context"
    # a type whose tail (beyond the quantile) is over the limit is priced on the requests that fit
    prompts = np.full(200, 3000)
    prompts[:1] = 6000
    assert np.mean(prompts + 50 > 4096) < 1 - CONTEXT_QUANTILE
    mixed = capm.capacity(_tp(4), prompts, np.full(200, 50))
    assert mixed.serves and mixed.rate_rps == pytest.approx(
        capm.capacity(_tp(4), 3000, 50).rate_rps, rel=0.05
    )


def test_the_plan_never_routes_a_type_where_it_does_not_fit(mooncake, mooncake_plan) -> None:
    _cluster, result = mooncake_plan
    limits = {c: CostModel(LLAMA2_70B, c).memory.max_model_len for c in result.configs}
    longest = max(limits.values())
    assert longest == LLAMA2_70B.max_position_embeddings == 4096
    for k, d in enumerate(result.demands):
        prompts, outputs = d.lengths
        need = (prompts + outputs)[prompts + outputs <= longest]
        for j, c in enumerate(result.configs):
            if result.mu_rps[k, j] > 0:
                assert np.quantile(need, CONTEXT_QUANTILE) <= limits[c]
            elif len(need) and np.quantile(need, CONTEXT_QUANTILE) > limits[c]:
                assert result.limits[k][j] == "context"
        if not len(need):
            assert d.name in result.unheld_types and d.name not in result.deployment.weights
    # Mooncake's prompts (p50 11.6k tokens) are mostly beyond Llama-2's context: some types nothing holds
    assert result.unheld_types and len(result.unheld_types) < len(result.demands)
    assert any("no config holds" in n for n in result.notes)
    names = {r.name: r.config for r in result.deployment.replicas}
    for row in result.deployment.weights.values():
        assert all(names[name] in result.configs for name in row)


def test_simulate_rejects_what_no_replica_holds_and_serves_only_what_fits(mooncake, mooncake_plan) -> None:
    cluster, result = mooncake_plan
    res = simulate(mooncake, result.deployment, LLAMA2_70B, cluster, slo=SLO.to_dict())
    s, rec = res.summary, res.records
    need = rec["prompt_tokens"].to_numpy() + np.maximum(rec["output_tokens"].to_numpy(), 1)
    over = int(np.count_nonzero(need > 4096))
    assert over > len(rec) / 3  # the trace is mostly long prompts
    assert s["unholdable"] == over and s["rejected"] >= over
    assert s["completed"] + s["rejected"] + s["dropped"] == s["requests"]
    served = rec["finish_s"].notna().to_numpy()
    limit = {r.name: CostModel(LLAMA2_70B, r.config).memory.max_model_len for r in result.deployment.replicas}
    assert np.all(need[served] <= rec["replica"][served].map(limit).to_numpy())
    assert not np.any(served & rec["rejected"].to_numpy())
    assert s["slo_attainment"] <= 1 - over / len(rec)

"""Long-context isolation: the split sub-clusters, the merged deployment, long types routed only to their part."""

from __future__ import annotations

import numpy as np
import pytest

from oserve.errors import ConfigError
from oserve.planner import default_slo, demands_from_trace, plan
from oserve.planner.isolate import (
    isolated_plan,
    long_types,
    simulated_best_isolation,
    split_cluster,
    split_sizes,
)
from oserve.spec import Deployment, get_model, parse_cluster
from oserve.trace import Trace, TypeGrid


def _mixed(seed: int = 0, n: int = 400) -> Trace:
    """Chat-like requests with one in five a long document (20k-60k prompt tokens)."""
    rng = np.random.default_rng(seed)
    arrival = np.sort(rng.uniform(0, 60.0, n))
    long = rng.random(n) < 0.2
    prompt = np.where(long, rng.integers(20_000, 60_000, n), rng.integers(100, 2_000, n))
    output = rng.integers(20, 400, n)
    return Trace.from_arrays(arrival, prompt, output, name="mixed")


@pytest.mark.parametrize(("spelling", "k"), [("1x8xH100", 2), ("2x8xH100", 4), ("2x8xH100", 12)])
def test_split_cluster_keeps_every_gpu_once_and_nodes_whole(spelling, k):
    cluster = parse_cluster(spelling)
    (long_cl, long_ids), (rest_cl, rest_ids) = split_cluster(cluster, k)
    assert long_ids == list(range(k)) and rest_ids == list(range(k, cluster.num_gpus))
    assert long_cl.num_gpus == k and rest_cl.num_gpus == cluster.num_gpus - k
    for part, ids in ((long_cl, long_ids), (rest_cl, rest_ids)):
        for node in part.nodes:  # a sub-node lies inside one real node
            assert len({cluster.gpus[ids[g]].node for g in part.node_gpu_ids(node.index)}) == 1
    with pytest.raises(ConfigError):
        split_cluster(cluster, cluster.num_gpus)


def test_isolated_plan_is_a_valid_deployment_with_long_types_on_their_own_replicas():
    model, cluster = get_model("llama-3.1-8b"), parse_cluster("1x8xH100")
    trace = _mixed()
    grid = TypeGrid((2_000, 16_384), (200,))
    long = long_types(grid)
    assert long == ("p>=16384,o<200", "p>=16384,o>=200")
    demands, typed = demands_from_trace(trace, grid, peak_quantile=0.9)
    slo = default_slo(model, cluster)
    isolated = isolated_plan(model, cluster, demands, slo, long, 4, grid=typed)
    dep = isolated.deployment
    dep.validate(cluster)
    ids = [g for r in dep.replicas for g in r.gpu_ids]
    assert len(ids) == len(set(ids)) and set(ids) <= set(range(cluster.num_gpus))
    long_names = {r.name for r in dep.replicas if r.name.startswith("long-")}
    assert long_names and {g for r in dep.replicas if r.name in long_names for g in r.gpu_ids} <= set(
        range(4)
    )
    for t in grid.names:
        row = dep.weights[t]  # every type has a row: nothing falls to "any replica"
        assert set(row) <= long_names if t in long else not set(row) & long_names
    again = Deployment.from_dict(dep.to_dict())  # the merged deployment serialises without loss
    assert again.weights == dep.weights and [r.gpu_ids for r in again.replicas] == [
        r.gpu_ids for r in dep.replicas
    ]
    whole = plan(model, cluster, demands, slo, grid=typed)
    assert all(0 < k < 8 for k in split_sizes(cluster, demands, long, whole))


def test_simulated_best_isolation_picks_a_split_and_simulates_it():
    model, cluster = get_model("llama-3.1-8b"), parse_cluster("1x8xH100")
    trace = _mixed(n=200)
    grid = TypeGrid((2_000, 16_384), (200,))
    verified, isolated = simulated_best_isolation(
        trace, model, cluster, default_slo(model, cluster), grid=grid, sizes=(2, 4), routers=("weighted",)
    )
    assert isolated.long_gpus in (2, 4) and len(verified.tried) == 2
    records = verified.result.records
    on_long = records["replica"].astype(str).str.startswith("long-")
    assert (records.loc[on_long, "type_name"].isin(isolated.long_types)).all()

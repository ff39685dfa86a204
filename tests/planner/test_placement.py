"""Placement: the packing rows are exact for power-of-two TP groups, and ``place`` honours the topology."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factories import make_replica
from oserve.errors import InfeasibleError
from oserve.planner import candidate_configs, packing_rows, place
from oserve.spec import Deployment, get_model, parse_cluster

CONFIGS = [make_replica("h100", tp=tp, pp=pp) for tp in (1, 2, 4, 8) for pp in (1, 2)]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 6), min_size=len(CONFIGS), max_size=len(CONFIGS)),
    st.sampled_from(["2x8xH100", "1x8xH100+2x4xH100", "3x4xH100"]),
)
def test_counts_within_the_packing_rows_always_place(counts, spelling) -> None:
    cluster = parse_cluster(spelling)
    configs = [c for c in CONFIGS if c.tp <= max(n.num_gpus for n in cluster.nodes)]
    counts = np.array(counts[: len(configs)])
    rows = packing_rows(cluster, configs)
    pairs = list(zip(configs, counts.tolist(), strict=True))
    if rows.feasible(counts):
        replicas = place(cluster, pairs)
        assert len(replicas) == counts.sum()
        if replicas:
            Deployment("m", replicas).validate(cluster)  # TP inside a node, ids real, no GPU twice
    else:
        with pytest.raises(InfeasibleError):
            place(cluster, pairs)


def test_max_count_is_what_still_fits() -> None:
    cluster = parse_cluster("2x8xH100")
    configs = [make_replica("h100", tp=4), make_replica("h100", tp=2)]
    rows = packing_rows(cluster, configs)
    assert rows.max_count(np.array([0, 0]), 0) == 4
    assert rows.max_count(np.array([3, 0]), 1) == 2
    assert rows.max_count(np.array([3, 2]), 0) == 0


def test_tp8_never_lands_on_four_gpu_nodes() -> None:
    cluster = parse_cluster("1x8xH100+2x4xH100")
    tp8 = make_replica("h100", tp=8)
    rows = packing_rows(cluster, [tp8])
    assert rows.max_count(np.zeros(1), 0) == 1
    with pytest.raises(InfeasibleError, match="cannot place"):
        place(cluster, [(tp8, 2)])


def test_candidates_skip_shapes_the_model_or_the_cluster_cannot_hold() -> None:
    configs, reasons = candidate_configs(get_model("llama-2-70b"), parse_cluster("1x8xH100"))
    shapes = {(c.tp, c.pp) for c in configs}
    assert (1, 1) not in shapes and (4, 1) in shapes and (8, 1) in shapes
    assert all(c.num_gpus <= 8 for c in configs)
    assert any("TP1" in r for r in reasons)


def test_stages_of_a_pipeline_replica_share_a_node_when_they_can() -> None:
    cluster = parse_cluster("2x8xH100")
    (replica,) = place(cluster, [(make_replica("h100", tp=2, pp=4), 1)])
    assert {cluster.gpus[g].node for g in replica.gpu_ids} == {0}
    assert sorted(replica.gpu_ids) == list(range(8))


def test_place_uses_only_the_free_gpus_it_is_given() -> None:
    cluster = parse_cluster("1x8xH100")
    free = {0: [4, 5, 6, 7]}
    replicas = place(cluster, [(make_replica("h100", tp=2), 2)], free=free)
    assert sorted(g for r in replicas for g in r.gpu_ids) == [4, 5, 6, 7]
    with pytest.raises(InfeasibleError):
        place(cluster, [(make_replica("h100", tp=4), 2)], free=free)

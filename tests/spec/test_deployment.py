"""Deployment: construction rules, validation against a cluster, YAML/JSON round trip, homogeneous packing."""

from __future__ import annotations

import pytest

from oserve.errors import SpecError
from oserve.spec import Deployment, Replica, ReplicaConfig, get_gpu, parse_cluster

H100 = get_gpu("h100")


def _replica(name: str, ids: tuple[int, ...], tp: int = 2) -> Replica:
    return Replica(ReplicaConfig(H100, tp=tp), ids, name)


@pytest.mark.parametrize(
    ("cluster", "tp", "pp", "expected"),
    [
        ("2x8xH100", 4, 1, 4),
        ("2x8xH100", 8, 1, 2),
        ("1x8xH100", 2, 1, 4),
        ("2x4xH100", 4, 2, 1),
        ("1x8xH100", 1, 1, 8),
    ],
)
def test_homogeneous_packs_whole_nodes(cluster: str, tp: int, pp: int, expected: int) -> None:
    c = parse_cluster(cluster)
    d = Deployment.homogeneous("llama-2-70b", c, ReplicaConfig(H100, tp=tp, pp=pp))
    d.validate(c)
    assert len(d.replicas) == expected
    used = [g for r in d.replicas for g in r.gpu_ids]
    assert len(used) == len(set(used)) == expected * tp * pp


def test_homogeneous_too_many_replicas_is_an_error() -> None:
    with pytest.raises(SpecError, match="cannot hold 3"):
        Deployment.homogeneous("m", parse_cluster("1x8xH100"), ReplicaConfig(H100, tp=4), count=3)


def test_homogeneous_on_missing_gpu_type_is_an_error() -> None:
    with pytest.raises(SpecError, match="cannot hold"):
        Deployment.homogeneous("m", parse_cluster("1x8xA100-80GB"), ReplicaConfig(H100, tp=4))


@pytest.mark.parametrize(
    ("replicas", "weights", "message"),
    [
        ((), {}, "at least one replica"),
        ((_replica("a", (0, 1)), _replica("a", (2, 3))), {}, "unique"),
        ((_replica("a", (0, 1)), _replica("b", (1, 2))), {}, "GPU 1 is used by both a and b"),
        ((_replica("a", (0, 1)),), {"t": {"zz": 1.0}}, "unknown replicas"),
        ((_replica("a", (0, 1)),), {"t": {"a": -1.0}}, "non-negative"),
    ],
)
def test_invalid_deployments_name_the_problem(replicas, weights, message) -> None:
    with pytest.raises(SpecError, match=message):
        Deployment("m", replicas, weights)


def test_replica_needs_the_right_gpu_count() -> None:
    with pytest.raises(SpecError, match="needs 2 GPUs"):
        _replica("a", (0,))


def test_validate_rejects_tp_across_nodes_wrong_type_and_unknown_ids() -> None:
    c = parse_cluster("1x4xH100+1x4xA100-80GB")
    with pytest.raises(SpecError, match="spans nodes"):
        Deployment("m", (_replica("a", (3, 4)),)).validate(parse_cluster("2x4xH100"))
    with pytest.raises(SpecError, match="is a A100-80GB"):
        Deployment("m", (_replica("a", (4, 5)),)).validate(c)
    with pytest.raises(SpecError, match="not in cluster"):
        Deployment("m", (_replica("a", (8, 9)),)).validate(c)


def test_weight_matrix_normalises_and_defaults_to_uniform() -> None:
    d = Deployment("m", (_replica("a", (0, 1)), _replica("b", (2, 3))), {"short": {"a": 3.0, "b": 1.0}})
    assert d.weight_matrix(["short", "long"]) == [[0.75, 0.25], [0.5, 0.5]]


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_round_trip(tmp_path, suffix: str) -> None:
    d = Deployment(
        "llama-2-70b",
        (_replica("a", (0, 1)), _replica("b", (2, 3, 4, 5), tp=4)),
        {"p0o0": {"a": 1.0}, "p1o0": {"a": 0.2, "b": 0.8}},
        {"prompt_edges": [1000], "output_edges": []},
    )
    path = tmp_path / f"d{suffix}"
    d.save(path)
    assert Deployment.load(path) == d


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "replicas"),
        ("model: m\nreplicas: [{gpu: h100, tp: 2}]", "lacks 'gpus'"),
        ("model: m\nreplicas: [{gpu: h999, tp: 1, gpus: [0]}]", "unknown GPU"),
        ("model: m\nreplicas: [{gpu: h100, tp: 3, gpus: [0, 1, 2]}]", "power of two"),
        ("model: m\nreplicas: [{gpu: h100, gpus: [0]}]\nweights: {t: {r0: abc}}", "numbers"),
        ("model: m\nreplicas: [{gpu: h100, gpus: [0]}]\nweights: [1]", "weights"),
        ("model: [unclosed", "not valid YAML"),
        ("model: m\nreplicas: [{gpu: h100, tp: 1.9, gpus: [0]}]", r"tp must be an integer, got 1\.9"),
        ("model: m\nreplicas: [{gpu: h100, pp: .inf, gpus: [0]}]", "pp must be an integer"),
        ("model: m\nreplicas: [{gpu: h100, gpus: [0], name: ../../x}]", "never a path"),
        ("model: m\nreplicas: [{gpu: h100, gpus: [0]}]\nweights: {t: {r0: .nan}}", "finite"),
        ("model: m\nreplicas: [{gpu: h100, gpus: [0]}]\ntype_edges: [1, 2]", "type_edges must be a mapping"),
        ("model: m\nreplicas: [{gpu: h100, gpus: [0]}]\ntype_edges: {prompt_edges: [5, 5]}", "increasing"),
        ("[" * 5000, "nested too deeply"),
    ],
)
def test_load_errors_name_the_problem(tmp_path, text: str, message: str) -> None:
    path = tmp_path / "d.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match=message):
        Deployment.load(path)

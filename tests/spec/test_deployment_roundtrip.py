"""The deployment file carries what the data plane needs: grid, router and every engine setting survive a round
trip through real YAML and JSON files, and write -> read -> write is identical."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oserve.errors import SpecError
from oserve.spec import Deployment, ReplicaConfig, RequestGrid, RouterSpec, get_gpu
from oserve.spec.deployment import Replica


def _edges():
    return st.lists(st.integers(1, 1 << 20), max_size=4, unique=True).map(lambda v: tuple(sorted(v)))


@st.composite
def deployments(draw):
    n = draw(st.integers(1, 3))
    replicas = []
    for i in range(n):
        tp = draw(st.sampled_from([1, 2]))
        config = ReplicaConfig(
            get_gpu("H100"),
            tp=tp,
            max_num_seqs=draw(st.integers(1, 1024)),
            max_num_batched_tokens=draw(st.integers(1, 1 << 16)),
            block_size=draw(st.sampled_from([8, 16, 32])),
            gpu_memory_utilization=draw(st.floats(0.05, 1.0)),
            max_model_len=draw(st.none() | st.integers(1, 1 << 17)),
            enable_prefix_caching=draw(st.booleans()),
        )
        replicas.append(Replica(config, tuple(range(i * 2, i * 2 + tp)), f"r{i}"))
    grid = draw(st.none() | st.builds(RequestGrid, _edges(), _edges()))
    params = draw(
        st.dictionaries(st.sampled_from(["interval_s", "threshold"]), st.integers(0, 9) | st.floats(0, 9))
    )
    router = draw(
        st.none() | st.builds(RouterSpec, st.sampled_from(["weighted", "llumnix"]), st.just(params))
    )
    return Deployment("llama-2-70b", tuple(replicas), {"t0": {"r0": 1.0}}, grid, "note", router)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dep=deployments(), suffix=st.sampled_from([".yaml", ".json"]))
def test_write_read_write_is_identical(tmp_path, dep, suffix):
    first = tmp_path / f"a{suffix}"
    dep.save(first)
    back = Deployment.load(first)
    assert back == dep
    second = tmp_path / f"b{suffix}"
    back.save(second)
    assert second.read_text() == first.read_text()


def test_old_file_with_types_and_no_engine_settings_still_reads(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text(
        "model: m\nreplicas: [{name: r0, gpu: H100, tp: 1, gpus: [0]}]\n"
        "type_edges: {prompt_edges: [100], output_edges: [], types: [p0o0, p1o0]}\n"
    )
    dep = Deployment.load(path)
    assert dep.type_edges == RequestGrid((100,), ())
    assert dep.router is None and dep.replicas[0].config.block_size == 16


_REPLICA = "model: m\nreplicas: [{{name: r0, gpu: H100, gpus: [0]{extra}}}]\n"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        # engine settings
        (_REPLICA.format(extra=", block_size: 1.5"), "block_size"),
        (_REPLICA.format(extra=", gpu_memory_utilization: .nan"), "gpu_memory_utilization"),
        (_REPLICA.format(extra=", gpu_memory_utilization: '0.9'"), "gpu_memory_utilization"),
        (_REPLICA.format(extra=", max_model_len: true"), "max_model_len"),
        (_REPLICA.format(extra=", enable_prefix_caching: 1"), "enable_prefix_caching"),
        # the router
        (_REPLICA.format(extra="") + "router: {type: 'No Such'}\n", "router.type"),
        (_REPLICA.format(extra="") + "router: {type: jsq, parameters: {x: .inf}}\n", "parameters.x"),
        (_REPLICA.format(extra="") + "router: {type: jsq, extra: 1}\n", "unknown keys"),
        (_REPLICA.format(extra="") + "router: [jsq]\n", "router must be a mapping"),
    ],
)
def test_engine_settings_and_router_are_strict(tmp_path, text, field):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match=field):
        Deployment.load(path)

"""``oserve.spec.cluster``: the compact spelling, the YAML form, GPU ids and nodes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from oserve.errors import SpecError
from oserve.spec import Cluster, get_gpu, parse_cluster


@pytest.mark.parametrize(
    ("spec", "nodes", "compact"),
    [
        # nodes: (GPU name, GPUs per node) in order
        ("2x8xH100", [("H100-SXM-80GB", 8)] * 2, "2x8xH100-SXM-80GB"),
        ("8xH100", [("H100-SXM-80GB", 8)], "1x8xH100-SXM-80GB"),
        ("H100", [("H100-SXM-80GB", 1)], "1x1xH100-SXM-80GB"),
        (
            "1x8xA100-80GB+2x4xL40S",
            [("A100-80GB", 8), ("L40S", 4), ("L40S", 4)],
            "1x8xA100-80GB+2x4xL40S",
        ),
        ("2x8xh100 + 1x4xa10g", [("H100-SXM-80GB", 8)] * 2 + [("A10G", 4)], "2x8xH100-SXM-80GB+1x4xA10G"),
        ("1x8xH100+1x8xH100", [("H100-SXM-80GB", 8)] * 2, "2x8xH100-SXM-80GB"),
    ],
)
def test_compact_spelling(spec: str, nodes: list[tuple[str, int]], compact: str) -> None:
    cluster = parse_cluster(spec)
    assert [(n.gpu.name, n.num_gpus) for n in cluster.nodes] == nodes
    assert [n.index for n in cluster.nodes] == list(range(len(nodes)))
    assert cluster.num_gpus == sum(count for _, count in nodes)
    assert cluster.compact() == cluster.name == compact
    assert parse_cluster(compact).nodes == cluster.nodes  # the compact spelling round-trips


def test_gpu_ids_unique_and_nodes_correct() -> None:
    cluster = parse_cluster("1x8xA100-80GB+2x4xL40S")
    ids = [slot.gpu_id for slot in cluster.gpus]
    assert ids == list(range(16))
    assert [slot.node for slot in cluster.gpus] == [0] * 8 + [1] * 4 + [2] * 4
    assert [slot.local_index for slot in cluster.gpus] == [*range(8), *range(4), *range(4)]
    assert cluster.node_gpu_ids(1) == [8, 9, 10, 11]
    assert cluster.gpu_of(0).name == "A100-80GB"
    assert cluster.gpu_of(15).name == "L40S"
    assert [g.name for g in cluster.gpu_types()] == ["A100-80GB", "L40S"]
    assert cluster.total_price_per_hour() == pytest.approx(8 * 3.70 + 8 * 1.90)


@pytest.mark.parametrize(
    ("spec", "link", "network"),
    [("8xH100", "nvlink", 400.0), ("8xA100-80GB", "nvlink", 200.0), ("4xL40S", "pcie", 12.5)],
)
def test_default_links(spec: str, link: str, network: float) -> None:
    node = parse_cluster(spec).nodes[0]
    gpu = node.gpu
    assert node.intra_link == link
    assert node.intra_gb_per_s == (gpu.nvlink_gb_per_s if link == "nvlink" else gpu.pcie_gb_per_s)
    assert node.network_gb_per_s == network


@pytest.mark.parametrize(
    "spec", ["2x", "0x8xH100", "2x0xH100", "2x8x", "x8xH100", "", "   ", "2x8xH100+", "8xB300"]
)
def test_malformed_compact_spelling(spec: str) -> None:
    with pytest.raises(SpecError):
        parse_cluster(spec)


def test_malformed_term_message_names_the_term() -> None:
    with pytest.raises(SpecError, match=r"malformed cluster term '2x8x'.*NODESxGPUSxTYPE"):
        parse_cluster("1x8xH100+2x8x")


def test_parse_cluster_passes_a_cluster_through() -> None:
    cluster = parse_cluster("2x8xH100")
    assert parse_cluster(cluster) is cluster


def _write(tmp_path: Path, data: object, name: str = "cluster.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_yaml_cluster(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {
            "name": "lab",
            "network_gb_per_s": 50,
            "nodes": [
                {"gpu": "h100", "count": 8, "num_nodes": 2},
                {
                    "gpu": "l40s",
                    "count": 4,
                    "intra_link": "pcie",
                    "price_per_hour": 1.25,
                    "network_gb_per_s": 25,
                },
                {
                    "gpu": "a100-40gb",
                    "count": 2,
                    "intra_link": "pcie",
                    "host_memory_gib": 512,
                    "disk_gb_per_s": 7,
                },
            ],
        },
    )
    cluster = parse_cluster(path)
    assert cluster.name == "lab"
    assert [(n.index, n.gpu.name, n.num_gpus) for n in cluster.nodes] == [
        (0, "H100-SXM-80GB", 8),
        (1, "H100-SXM-80GB", 8),
        (2, "L40S", 4),
        (3, "A100-40GB", 2),
    ]
    assert cluster.num_gpus == 22
    assert [n.network_gb_per_s for n in cluster.nodes] == [50, 50, 25, 50]  # cluster default, node override
    a100 = cluster.nodes[3]
    assert a100.intra_link == "pcie" and a100.intra_gb_per_s == get_gpu("a100-40gb").pcie_gb_per_s
    assert (a100.host_memory_gib, a100.disk_gb_per_s) == (512, 7)
    # the price override applies to that node's GPUs only
    assert cluster.nodes[2].gpu.price_per_hour == 1.25
    assert get_gpu("l40s").price_per_hour == 1.90
    expected = 16 * get_gpu("h100").price_per_hour + 4 * 1.25 + 2 * get_gpu("a100-40gb").price_per_hour
    assert cluster.total_price_per_hour() == pytest.approx(expected)


def test_yaml_path_as_string_and_mapping_agree(tmp_path: Path) -> None:
    data = {"nodes": [{"gpu": "H200", "count": 4}]}
    path = _write(tmp_path, data, "c.yml")
    from_file, from_dict = parse_cluster(str(path)), parse_cluster(data)
    assert from_file.nodes == from_dict.nodes
    assert isinstance(from_file, Cluster) and from_file.name == "1x4xH200"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"nodes": [{"gpu": "h100", "colour": "red"}]}, "colour"),
        ({"nodes": [{"gpu": "h100"}], "region": "eu"}, "region"),
        ({"nodes": []}, "nodes"),
        ({"nodes": [{"gpu": "h100", "count": 0}]}, "count"),
        ({"nodes": [{"gpu": "h100", "num_nodes": 0}]}, "num_nodes"),
        ({"nodes": [{"gpu": "h100", "intra_link": "infiniband"}]}, "intra_link"),
        ({"nodes": [{"gpu": "h100", "price_per_hour": -1}]}, "price_per_hour"),
        ({"nodes": [{"gpu": "b300"}]}, "unknown GPU type 'b300'"),
        ({"nodes": [{"gpu": "l40s", "intra_link": "nvlink"}]}, "L40S has no NVLink"),
        ({"nodes": [{"gpu": "a10g", "intra_link": "nvlink"}]}, "A10G has no NVLink"),
    ],
)
def test_invalid_yaml_cluster(tmp_path: Path, data: dict, expected: str) -> None:
    with pytest.raises(SpecError, match=expected):
        parse_cluster(_write(tmp_path, data))


def test_yaml_errors_name_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, {"nodes": [{"gpu": "h100", "colour": "red"}]})
    with pytest.raises(SpecError, match=r"cluster\.yaml: invalid cluster: nodes\.0\.colour"):
        parse_cluster(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("nodes: [gpu: h100\n", "not valid YAML"), ("- 1\n- 2\n", "expected a mapping")],
)
def test_unreadable_yaml(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match=expected):
        parse_cluster(path)


def test_missing_yaml_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cluster file not found"):
        parse_cluster(tmp_path / "absent.yaml")


@pytest.mark.parametrize(
    "spec",
    [
        "999999999x8xH100",  # used to hang building a billion nodes
        "4000x8xH100+200x8xA100",
        "1x100000xH100",
        {"nodes": [{"gpu": "H100", "num_nodes": 10**9}]},
        {"nodes": [{"gpu": "H100", "num_nodes": 3000}, {"gpu": "A100", "num_nodes": 3000}]},
    ],
)
def test_cluster_sizes_are_bounded(spec: str | dict) -> None:
    with pytest.raises(SpecError, match=r"4096|less than or equal"):
        parse_cluster(spec)

"""Links: routes per source kind, bandwidths from the cluster, and the fluid schedule's arithmetic."""

from __future__ import annotations

import pytest

from oserve.adapt.links import FluidSchedule, Links, Source
from oserve.spec import parse_cluster

CLUSTER = parse_cluster("2x8xH100")


@pytest.mark.parametrize(
    ("source", "dst", "link", "resources"),
    [
        (Source("gpu", 0, 3), 3, "local", ()),
        (Source("gpu", 0, 1), 0, "nvlink", ("nvlink-out:1", "nvlink-in:0")),
        (Source("gpu", 1, 9), 0, "network", ("pcie-out:9", "nic-out:1", "nic-in:0", "pcie-in:0")),
        (Source("host", 1), 10, "host", ("pcie-in:10",)),
        (Source("disk", 0), 2, "disk", ("disk:0", "pcie-in:2")),
    ],
)
def test_routes(source: Source, dst: int, link: str, resources: tuple[str, ...]) -> None:
    assert Links(CLUSTER).route(source, dst) == (link, resources)


def test_pcie_only_nodes_copy_peer_to_peer_over_pcie() -> None:
    links = Links(parse_cluster("1x4xL40S"))
    assert links.route(Source("gpu", 0, 1), 0) == ("pcie", ("pcie-out:1", "pcie-in:0"))
    assert links.gb_per_s("pcie-in:0") == 32.0


def test_bandwidths_come_from_the_specs() -> None:
    links = Links(CLUSTER)
    node = CLUSTER.nodes[0]
    assert links.gb_per_s("nvlink-in:3") == node.intra_gb_per_s == 450.0
    assert links.gb_per_s("pcie-out:3") == node.gpu.pcie_gb_per_s
    assert links.gb_per_s("nic-in:1") == node.network_gb_per_s
    assert links.gb_per_s("disk:0") == node.disk_gb_per_s


def test_one_transfer_runs_at_its_bottleneck() -> None:
    fluid = FluidSchedule(Links(CLUSTER))
    end, segments = fluid.fill(("disk:0", "pcie-in:0"), 1.0, 4_000_000_000)
    assert end == pytest.approx(3.0)  # 4 GB at the disk's 2 GB/s, from t = 1
    assert segments == ((1.0, pytest.approx(3.0), 2e9),)


def test_a_second_transfer_takes_what_is_left_then_speeds_up() -> None:
    fluid = FluidSchedule(Links(CLUSTER))
    first = ("nvlink-out:1", "nvlink-in:0")
    end, seg = fluid.fill(first, 0.0, 45_000_000_000)  # 0.1 s at 450 GB/s
    fluid.reserve(first, seg)
    # GPU 1 -> 2 shares GPU 1's port: nothing until the first ends, then the full port
    end2, seg2 = fluid.fill(("nvlink-out:1", "nvlink-in:2"), 0.0, 45_000_000_000)
    assert end == pytest.approx(0.1) and end2 == pytest.approx(0.2)
    assert seg2 == ((pytest.approx(0.1), pytest.approx(0.2), 450e9),)
    # the NIC (400 GB/s) is shared by two GPUs whose PCIe links cap each at 64 GB/s: both run at full rate
    a = ("pcie-out:8", "nic-out:1", "nic-in:0", "pcie-in:3")
    b = ("pcie-out:9", "nic-out:1", "nic-in:0", "pcie-in:4")
    _, sa = fluid.fill(a, 0.0, 64_000_000_000)
    fluid.reserve(a, sa)
    _, sb = fluid.fill(b, 0.0, 64_000_000_000)
    assert sa[0][2] == sb[0][2] == 64e9
    assert max(fluid.peak_use().values()) <= 1.0 + 1e-12


def test_a_partly_busy_link_gives_the_rest() -> None:
    fluid = FluidSchedule(Links(CLUSTER))
    fluid.reserve(("nic-out:1",), [(0.0, 1.0, 300e9)])
    end, seg = fluid.fill(("nic-out:1",), 0.0, 200_000_000_000)
    # 100 GB/s for the first second, then the full 400 GB/s for the remaining 100 GB
    assert seg == ((0.0, 1.0, pytest.approx(100e9)), (1.0, pytest.approx(1.25), 400e9))
    assert end == pytest.approx(1.25)

"""``oserve.spec.gpu``: catalogue lookups by name and alias."""

from __future__ import annotations

import pytest

from oserve.errors import SpecError
from oserve.spec import get_gpu, list_gpus


@pytest.mark.parametrize(
    ("spelling", "name", "memory_gb"),
    [
        ("h100", "H100-SXM-80GB", 80),
        ("H100", "H100-SXM-80GB", 80),
        ("h100-sxm5", "H100-SXM-80GB", 80),
        ("H100 SXM 80GB", "H100-SXM-80GB", 80),
        ("A100-80GB", "A100-80GB", 80),
        ("a100", "A100-80GB", 80),
        ("a100-40gb", "A100-40GB", 40),
        ("a100_40g", "A100-40GB", 40),
        ("h200", "H200", 141),
        ("h200-141gb", "H200", 141),
        ("l40s", "L40S", 48),
        ("a10g", "A10G", 24),
    ],
)
def test_gpu_aliases(spelling: str, name: str, memory_gb: int) -> None:
    gpu = get_gpu(spelling)
    assert gpu.name == name
    assert gpu.memory_bytes == memory_gb * 10**9


def test_every_catalogue_gpu_resolves_by_its_name() -> None:
    names = list_gpus()
    assert names == sorted(names) and len(names) == 9
    for name in names:
        assert get_gpu(name).name == name
        assert get_gpu(name.lower()).name == name


@pytest.mark.parametrize(
    ("name", "nvlink", "calibration_key"),
    [
        ("h100", True, "h100"),
        ("h200", True, "h100"),
        ("a100-80gb", True, "a100"),
        ("a100-40gb", True, "a100"),
        ("l40s", False, ""),
        ("a10g", False, ""),
    ],
)
def test_gpu_link_and_calibration_family(name: str, nvlink: bool, calibration_key: str) -> None:
    gpu = get_gpu(name)
    assert gpu.has_nvlink is nvlink
    assert gpu.calibration_key == calibration_key
    assert gpu.bf16_flops > 0 and gpu.hbm_gb_per_s > 0 and gpu.price_per_hour > 0


def test_datasheet_ordering() -> None:
    h100, h200, a100 = get_gpu("h100"), get_gpu("h200"), get_gpu("a100")
    assert h200.hbm_gb_per_s > h100.hbm_gb_per_s > a100.hbm_gb_per_s
    assert h200.bf16_flops == h100.bf16_flops > a100.bf16_flops
    assert h100.memory_gib == pytest.approx(80e9 / 2**30)


@pytest.mark.parametrize("spelling", ["b300", "", "h100-nvl", "v100"])
def test_unknown_gpu_lists_choices(spelling: str) -> None:
    with pytest.raises(SpecError, match="unknown GPU type") as info:
        get_gpu(spelling)
    message = str(info.value)
    for name in list_gpus():
        assert name in message
    assert "h100" in message  # short names are listed too

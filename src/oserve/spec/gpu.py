"""GPU types (``GpuSpec``) and the built-in catalogue."""

from __future__ import annotations

import re
from dataclasses import dataclass

from oserve.errors import SpecError

__all__ = ["GpuSpec", "get_gpu", "gpu_for_system", "list_gpus"]

GIB = 1024**3


@dataclass(frozen=True, slots=True)
class GpuSpec:
    """One GPU's datasheet figures. Bandwidths are unidirectional GB/s (1e9 bytes/s) per GPU."""

    name: str
    memory_bytes: int
    bf16_flops: float  # dense bf16 tensor-core FLOP/s
    hbm_gb_per_s: float
    nvlink_gb_per_s: float  # 0 when the GPU has no NVLink (PCIe only)
    pcie_gb_per_s: float
    num_sms: int
    price_per_hour: float  # indicative on-demand USD per GPU-hour; override in a cluster YAML
    calibration_key: str = ""  # which Vidur profile folder calibrates this type ("h100", "a100"); "" = scaled
    system_key: str = (
        ""  # aiconfigurator's system name for this GPU ("h100_sxm"), the default calibration's key
    )

    @property
    def memory_gib(self) -> float:
        return self.memory_bytes / GIB

    @property
    def has_nvlink(self) -> bool:
        return self.nvlink_gb_per_s > 0


# Datasheet figures (NVIDIA): dense bf16 without sparsity; SXM parts for A100/H100/H200. Prices are typical
# 2025-26 on-demand cloud rates per GPU, for comparing deployments, not quotes.
_CATALOGUE: dict[str, GpuSpec] = {
    g.name: g
    for g in (
        GpuSpec("A100-40GB", 40 * 10**9, 312e12, 1555.0, 300.0, 32.0, 108, 2.90, "a100"),
        GpuSpec("A100-80GB", 80 * 10**9, 312e12, 2039.0, 300.0, 32.0, 108, 3.70, "a100", "a100_sxm"),
        GpuSpec("H100-SXM-80GB", 80 * 10**9, 989e12, 3350.0, 450.0, 64.0, 132, 6.90, "h100", "h100_sxm"),
        GpuSpec("H100-PCIe-80GB", 80 * 10**9, 756e12, 2000.0, 0.0, 64.0, 114, 4.50, "h100", "h100_pcie"),
        GpuSpec("H200", 141 * 10**9, 989e12, 4800.0, 450.0, 64.0, 132, 8.00, "h100", "h200_sxm"),
        GpuSpec("B200", 180 * 10**9, 2250e12, 8000.0, 900.0, 128.0, 148, 11.00, "h100", "b200_sxm"),
        GpuSpec("L40S", 48 * 10**9, 362e12, 864.0, 0.0, 32.0, 142, 1.90, "", "l40s"),
        GpuSpec("L4", 24 * 10**9, 121e12, 300.0, 0.0, 32.0, 58, 0.80, "", "l4"),
        GpuSpec("A10G", 24 * 10**9, 70e12, 600.0, 0.0, 32.0, 80, 1.00, ""),
    )
}

_ALIASES = {
    "a100": "A100-80GB",
    "a100-80": "A100-80GB",
    "a100-80g": "A100-80GB",
    "a100-40": "A100-40GB",
    "a100-40g": "A100-40GB",
    "h100": "H100-SXM-80GB",
    "h100-sxm": "H100-SXM-80GB",
    "h100-80gb": "H100-SXM-80GB",
    "h100-sxm5": "H100-SXM-80GB",
    "h200-141gb": "H200",
    "h200-sxm": "H200",
    "h100-pcie": "H100-PCIe-80GB",
    "b200-sxm": "B200",
    "b200-192gb": "B200",
}


def _key(text: str) -> str:
    return re.sub(r"[\s_]+", "-", text.strip().lower())


def list_gpus() -> list[str]:
    return sorted(_CATALOGUE)


def get_gpu(name: str) -> GpuSpec:
    """A catalogue GPU by name, case-insensitive (``h100``, ``a100-80gb``, ``H200``, ``l40s``)."""
    key = _key(name)
    by_key = {_key(n): g for n, g in _CATALOGUE.items()}
    if key in by_key:
        return by_key[key]
    if key in _ALIASES:
        return _CATALOGUE[_ALIASES[key]]
    raise SpecError(
        f"unknown GPU type {name!r}; known: {', '.join(list_gpus())} "
        f"(short names: {', '.join(sorted(_ALIASES))})"
    )


def gpu_for_system(system: str) -> GpuSpec:
    """The catalogue GPU whose aiconfigurator system name is ``system`` (``h100_sxm`` -> H100-SXM-80GB)."""
    for gpu in _CATALOGUE.values():
        if gpu.system_key == system:
            return gpu
    known = sorted(g.system_key for g in _CATALOGUE.values() if g.system_key)
    raise SpecError(f"no GPU type for aiconfigurator system {system!r}; known: {', '.join(known)}")

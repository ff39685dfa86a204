"""Calibration from NVIDIA aiconfigurator's silicon database: today's serving stacks measured on real GPUs.

The ``aiconfigurator-core`` package (PyPI, Apache-2.0; the ``calibrate`` extra) ships per-op timings collected
under vLLM, SGLang and TRT-LLM as Parquet under ``systems/data/<system>/<op>/<backend>/<version>/``: bf16 GEMMs
from one row up (so decode-sized GEMMs are measured, not extrapolated), context and generation attention kernels,
and the backend's own all-reduce at 2/4/8 GPUs. ``calibrate_from_aiconfigurator`` fits the cost model's roofline
efficiencies to those rows per system; the element-wise ops, which the database models analytically, take the
system file's memory-bandwidth factor and constant latency. The fit only reads the files: the package's compiled
estimator is never imported, so calibrating works wherever the wheel installs.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from scipy.optimize import least_squares

from oserve.errors import CalibrationError
from oserve.perf.calibration import Calibration, GpuCalibration, StackFactors, fit_alpha_beta
from oserve.perf.ops import GEMM_OPS, roofline
from oserve.spec.gpu import GpuSpec, gpu_for_system

__all__ = ["SYSTEMS", "AiconfiguratorData", "calibrate_from_aiconfigurator", "find_database"]

# The systems OServe has a GPU type for (aiconfigurator's name -> ours is ``gpu_for_system``).
SYSTEMS = ("h100_sxm", "h200_sxm", "a100_sxm", "l40s", "b200_sxm", "h100_pcie", "l4")
BACKENDS = ("vllm", "sglang", "trtllm")
_MS = 1e-3


def find_database(root: Path | str | None = None) -> Path:
    """The ``systems/data`` folder of the installed ``aiconfigurator-core`` (or ``root`` when given)."""
    if root is not None:
        path = Path(root)
        if not path.is_dir():
            raise CalibrationError(f"aiconfigurator database folder not found: {path}")
        return path
    spec = importlib.util.find_spec("aiconfigurator_core")
    if spec is None or not spec.submodule_search_locations:
        raise CalibrationError(
            "aiconfigurator is not installed: `pip install 'oserve[calibrate]'` (its aiconfigurator-core "
            "package ships the perf database), or pass --database DIR"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "systems" / "data"
    if not path.is_dir():
        raise CalibrationError(f"aiconfigurator-core has no perf database at {path}")
    return path


def _newest(folder: Path) -> Path | None:
    """The newest version folder under ``folder`` (numeric parts compared), or None."""
    if not folder.is_dir():
        return None
    versions = [p for p in folder.iterdir() if p.is_dir()]

    def key(p: Path) -> tuple[tuple[int, ...], str]:
        parts = tuple(int(x) for x in "".join(c if c.isdigit() else " " for c in p.name).split()[:4])
        return parts, p.name

    return max(versions, key=key) if versions else None


@dataclass(frozen=True, slots=True)
class AiconfiguratorData:
    """One system's tables for one backend (latencies converted to seconds), and where they came from."""

    system: str
    backend: str
    versions: dict[str, str]  # op folder -> version used
    gemm: pd.DataFrame  # m, n, k, seconds
    context_attention: pd.DataFrame  # batch_size, isl, num_heads, num_key_value_heads, head_dim, seconds
    generation_attention: pd.DataFrame  # batch_size, step (context), heads..., seconds
    allreduce: pd.DataFrame  # num_gpus, size_bytes, seconds
    mem_bw_factor: float
    mem_constant_s: float

    @classmethod
    def load(cls, database: Path, system: str, backend: str = "vllm") -> AiconfiguratorData:
        root = database / system
        if not root.is_dir():
            raise CalibrationError(f"aiconfigurator has no system {system!r} (found: {_systems(database)})")
        versions: dict[str, str] = {}

        def table(op: str, name: str) -> pd.DataFrame:
            folder = _newest(root / op / backend)
            if folder is None or not (folder / name).is_file():
                raise CalibrationError(f"aiconfigurator {system}: no {backend} {op} data ({name})")
            versions[op] = folder.name
            return pd.read_parquet(folder / name)

        gemm = table("gemm", "gemm_perf.parquet")
        gemm = gemm[gemm["gemm_dtype"] == "bfloat16"]
        if "kernel_source" in gemm and (gemm["kernel_source"] == "torch.nn.functional.linear").any():
            gemm = gemm[gemm["kernel_source"] == "torch.nn.functional.linear"]
        ctx = _attention_rows(table("attention", "context_attention_perf.parquet"), "prefill")
        gen = _attention_rows(table("attention", "generation_attention_perf.parquet"), "decode")
        comm = _allreduce_rows(system, backend, root, versions)
        mem_factor, mem_const = _mem_model(database.parent / f"{system}.yaml")
        return cls(
            system=system,
            backend=backend,
            versions=versions,
            gemm=gemm.assign(seconds=gemm["latency"] * _MS)[["m", "n", "k", "seconds"]],
            context_attention=ctx,
            generation_attention=gen,
            allreduce=comm,
            mem_bw_factor=mem_factor,
            mem_constant_s=mem_const,
        )

    @property
    def source(self) -> str:
        versions = ", ".join(f"{op} {v}" for op, v in sorted(self.versions.items()))
        return f"aiconfigurator {self.system} {self.backend} ({versions})"


def _systems(database: Path) -> str:
    return ", ".join(sorted(p.name for p in database.iterdir() if p.is_dir()))


def _attention_rows(raw: pd.DataFrame, phase: str) -> pd.DataFrame:
    """bf16 KV, full (not sliding-window) attention, one kernel lane: FA3 where measured (vLLM's on Hopper),
    else the lane named for the phase (FlashInfer's ``...prefill`` / ``...decode`` on Blackwell), else the
    most measured one."""
    rows = raw
    for column, value in (("kv_cache_dtype", "bfloat16"), ("window_size", 0), ("beam_width", 1)):
        if column in rows:  # older collections lack some columns
            rows = rows[rows[column] == value]
    if "kernel_source" in rows and len(rows):
        counts = rows["kernel_source"].value_counts()
        lanes = list(counts.index)
        lane = next((x for x in lanes if "fa3" in x), None) or next(
            (x for x in lanes if phase in x), lanes[0]
        )
        rows = rows[rows["kernel_source"] == lane]
    cols = ["batch_size", "isl", "num_heads", "num_key_value_heads", "head_dim", "step"]
    return rows.assign(seconds=rows["latency"] * _MS)[[c for c in cols if c in rows] + ["seconds"]]


def _allreduce_rows(system: str, backend: str, root: Path, versions: dict[str, str]) -> pd.DataFrame:
    """The backend's all-reduce under CUDA graphs (its custom kernel), else NCCL's; sizes in bf16 elements."""
    folder = _newest(root / "comm" / backend)
    if folder is not None and (folder / "custom_allreduce_perf.parquet").is_file():
        raw = pd.read_parquet(folder / "custom_allreduce_perf.parquet")
        if "backend" in raw and raw["backend"].astype(str).str.contains("graph").any():
            raw = raw[raw["backend"].astype(str).str.contains("graph")]
        versions["comm"] = folder.name
    else:
        folder = _newest(root / "comm" / "nccl")
        if folder is None:
            raise CalibrationError(f"aiconfigurator {system}: no all-reduce data")
        raw = pd.read_parquet(folder / "nccl_perf.parquet")
        raw = raw[(raw["op_name"] == "all_reduce") & (raw["nccl_dtype"] == "half")]
        versions["comm"] = f"nccl {folder.name}"
    raw = raw[raw["latency"] > 0]
    return pd.DataFrame(
        {
            "num_gpus": raw["num_gpus"].astype(int),
            "size_bytes": raw["message_size"].astype(float) * 2.0,
            "seconds": raw["latency"].astype(float) * _MS,
        }
    )


def _mem_model(path: Path) -> tuple[float, float]:
    """The system file's memory-bound op model: (fraction of HBM bandwidth, constant latency s)."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
        gpu = data.get("gpu", data)
        return float(gpu.get("mem_bw_empirical_scaling_factor", 0.8)), float(
            gpu.get("mem_empirical_constant_latency", 3e-6)
        )
    except (OSError, yaml.YAMLError, AttributeError, TypeError, ValueError):
        return 0.8, 3e-6


# -- fits -------------------------------------------------------------------------------------------------------


def _fit_gemm(rows: pd.DataFrame, gpu: GpuSpec) -> dict[str, Any]:
    """One roofline for every GEMM (the database measures shapes, not our op names), on relative error, with the
    shapes a transformer layer has (both dims >= 128) and decode-sized M included."""
    rows = rows[(rows["n"] >= 128) & (rows["k"] >= 128)]
    m, n, k, seconds = (rows[c].to_numpy(float) for c in ("m", "n", "k", "seconds"))
    flops, bytes_ = 2.0 * m * n * k, 2.0 * (m * k + k * n + m * n)
    peak_b = gpu.hbm_gb_per_s * 1e9

    def predict(p: np.ndarray) -> np.ndarray:
        return roofline(flops, bytes_, gpu.bf16_flops, peak_b, p[2], p[3], p[0] * 1e-6, p[1])

    fit = least_squares(
        lambda p: np.log(predict(p) / seconds),
        np.array([5.0, 1.5, 0.7, 0.85]),
        bounds=([0.0, 1.0, 0.05, 0.05], [50.0, 8.0, 1.5, 1.5]),
        loss="soft_l1",
        f_scale=0.1,
    )
    overhead, blend, ce, me = (float(x) for x in fit.x)
    return {
        "gemm_overhead_s": overhead * 1e-6,
        "gemm_blend": blend,
        "gemm_compute_eff": dict.fromkeys(GEMM_OPS, ce),
        "gemm_memory_eff": dict.fromkeys(GEMM_OPS, me),
    }


def attention_kernel_s(
    flops: np.ndarray,
    bytes_: np.ndarray,
    gpu: GpuSpec,
    overhead_s: float,
    compute_eff: float,
    memory_eff: float,
) -> np.ndarray:
    """The cost model's attention kernel: ``overhead + ||(flops / F, bytes / B)||_2`` at the given efficiencies."""
    tc = flops / (gpu.bf16_flops * compute_eff)
    tm = bytes_ / (gpu.hbm_gb_per_s * 1e9 * memory_eff)
    return overhead_s + np.sqrt(tc * tc + tm * tm)


def attention_work(rows: pd.DataFrame, phase: str) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The rows of ``phase`` (``prefill``: context attention, causal over the whole prompt; ``decode``:
    generation attention, one query over ``step + 1`` tokens) on the shapes that serve (head_dim 64-128, at least
    4 query heads per GPU), with the FLOPs and HBM bytes the cost model charges for them."""
    rows = rows[(rows["head_dim"].isin([64, 128])) & (rows["num_heads"] >= 4)]
    if phase == "prefill":
        rows = rows[rows["isl"] >= 16]
    b = rows["batch_size"].to_numpy(float)
    q = rows["num_heads"].to_numpy(float) * rows["head_dim"].to_numpy(float)
    kv = rows["num_key_value_heads"].to_numpy(float) * rows["head_dim"].to_numpy(float)
    if phase == "prefill":
        s = rows["isl"].to_numpy(float)
        return rows, 4.0 * q * b * s * (s + 1) / 2.0, 2.0 * b * s * (2 * q + 2 * kv)
    ctx = rows["step"].to_numpy(float) + 1
    return rows, 4.0 * q * b * ctx, 2.0 * (2 * kv * b * ctx + 2 * q * b)


def _fit_kernel(rows: pd.DataFrame, phase: str, gpu: GpuSpec) -> tuple[float, float, float]:
    """(overhead s, compute eff, memory eff) of :func:`attention_kernel_s` on relative error."""
    rows, flops, bytes_ = attention_work(rows, phase)
    seconds = rows["seconds"].to_numpy(float)
    if len(seconds) < 8:
        raise CalibrationError(f"too few {phase} attention rows to fit ({len(seconds)})")
    fit = least_squares(
        lambda p: np.log(attention_kernel_s(flops, bytes_, gpu, p[0] * 1e-6, p[1], p[2]) / seconds),
        np.array([5.0, 0.4, 0.7]),
        bounds=([0.0, 0.01, 0.01], [100.0, 1.5, 1.5]),
        loss="soft_l1",
        f_scale=0.1,
    )
    return float(fit.x[0] * 1e-6), float(fit.x[1]), float(fit.x[2])


def _fit_attention(data: AiconfiguratorData, gpu: GpuSpec) -> dict[str, Any]:
    """Prefill (causal, compute-bound) and decode (KV-read-bound) attention fitted apart."""
    o, ce, me = _fit_kernel(data.context_attention, "prefill", gpu)
    do, dce, dme = _fit_kernel(data.generation_attention, "decode", gpu)
    return {
        "attn_overhead_s": o,
        "attn_compute_eff": ce,
        "attn_memory_eff": me,
        "decode_attn_overhead_s": do,
        "decode_attn_compute_eff": dce,
        "decode_attn_memory_eff": dme,
    }


def _fit_allreduce(rows: pd.DataFrame) -> dict[int, tuple[float, float]]:
    """Alpha (latency) and bus bandwidth apart, per GPU count, over every message size (the same fit as the
    Vidur profiles' NCCL timings)."""
    return {int(n): fit_alpha_beta(sub, 2.0 * (n - 1) / n) for n, sub in rows.groupby("num_gpus")}


def _elementwise(data: AiconfiguratorData) -> dict[str, Any]:
    """The database's analytical memory-op model mapped onto our ops: aiconfigurator prices a layer's fused
    add+norm twice (4 x hidden bytes each) and the gated activation once, at ``mem_bw_factor`` of HBM plus a
    constant; our add, two norms and activation carry the same bytes and constants, rotary embedding is fused
    into attention (left out), the embedding gather is a memory op at the same factor."""
    f = data.mem_bw_factor
    # bytes per token: ours input_ln 2h + post_ln 2h + add 3h = 7h against their 8h -> 7/8 of f
    norm_eff = f * 7.0 / 8.0
    return {
        "elem_overhead_s": 3.0 * data.mem_constant_s / 4.0,  # three constants spread over our four ops
        "elem_memory_eff": {
            "emb": f,
            "input_layernorm": norm_eff,
            "post_attention_layernorm": norm_eff,
            "add": norm_eff,
            "mlp_act": f,
        },
    }


def calibrate_system(database: Path, system: str, backend: str = "vllm") -> GpuCalibration:
    """Fit one system's calibration from its tables for ``backend``."""
    try:
        data = AiconfiguratorData.load(database, system, backend)
    except (KeyError, ValueError, OSError) as exc:
        raise CalibrationError(f"aiconfigurator {system} {backend}: unreadable tables ({exc!r})") from exc
    gpu = gpu_for_system(system)
    params: dict[str, Any] = {
        **_fit_gemm(data.gemm, gpu),
        **_fit_attention(data, gpu),
        **_elementwise(data),
        "allreduce": _fit_allreduce(data.allreduce),
        "source": data.source,
        # aiconfigurator's static estimate is the kernels' sum: vLLM V1 runs the step under CUDA graphs and
        # schedules the next step while this one runs, so no per-step CPU floor is added
        "stack": StackFactors(iteration_overhead_s=0.0),
    }
    return GpuCalibration(**params)


def calibrate_from_aiconfigurator(
    systems: list[str] | None = None,
    backend: str = "vllm",
    database: Path | str | None = None,
    *,
    fallback_backends: tuple[str, ...] = ("trtllm", "sglang"),
) -> Calibration:
    """A calibration per system from aiconfigurator's database. A system the backend has no data for is
    calibrated from the first fallback backend that has it (its ``source`` says so) or skipped when asked
    for by default; asked for by name it must have data."""
    if backend not in BACKENDS:
        raise CalibrationError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    root = find_database(database)
    explicit = systems is not None
    families: dict[str, GpuCalibration] = {}
    skipped: list[str] = []
    for system in systems or list(SYSTEMS):
        if system not in SYSTEMS:
            raise CalibrationError(f"unknown system {system!r}; expected one of {', '.join(SYSTEMS)}")
        last: CalibrationError | None = None
        for b in (backend, *[x for x in fallback_backends if x != backend]):
            try:
                families[system] = calibrate_system(root, system, b)
                break
            except CalibrationError as exc:
                last = exc
        else:
            if explicit and last is not None:
                raise last
            skipped.append(system)
    if not families:
        raise CalibrationError(f"no system could be calibrated from {root}")
    note = f"oserve perf calibrate --source aiconfigurator --backend {backend}"
    if skipped:
        note += f" (no data: {', '.join(skipped)})"
    return Calibration(families=families, note=note)

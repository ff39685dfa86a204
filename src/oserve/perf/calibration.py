"""Efficiency factors that turn datasheet rooflines into measured times, fitted per GPU family from profiles.

``calibrate_from_profiles`` fits them to per-op timings in the Vidur CSV format (``../shared/data/profiles``, or
what ``oserve profile`` measured on the user's GPUs); ``oserve perf calibrate`` runs it and writes the JSON that
ships as the built-in calibration. ``StackFactors`` hold what differs between serving stacks on the same GPU and
are fitted by :mod:`oserve.perf.fit` from a handful of whole-iteration measurements.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from oserve.errors import CalibrationError
from oserve.files import read_structured
from oserve.perf.ops import ELEMENTWISE_OPS, GEMM_OPS, LayerShape, roofline
from oserve.perf.profiles import load_collective_profiles, load_mlp_profiles
from oserve.spec.gpu import GpuSpec, get_gpu

__all__ = [
    "VIDUR_STACK",
    "Calibration",
    "GpuCalibration",
    "StackFactors",
    "builtin_calibration",
    "calibrate_from_profiles",
    "predict_profile_ops",
]

_GEMM_FIT_MIN_TOKENS = 1  # fit GEMMs on every size: decode steps run them on a few tokens (was 32)
# Reference GPU whose datasheet peaks normalise each profile folder's efficiencies.
_REFERENCE_GPU = {"h100": "H100-SXM-80GB", "a100": "A100-80GB"}


@dataclass(frozen=True, slots=True)
class StackFactors:
    """What a serving stack adds on top of kernel time; 1.0 / the default means 'as the profiles'."""

    compute_scale: float = 1.0  # multiplies compute-bound time
    memory_scale: float = 1.0  # multiplies memory-bound time
    attention_scale: float = 1.0  # multiplies attention kernel time
    comm_scale: float = 1.0  # multiplies collective time
    iteration_overhead_s: float = 0.0015  # scheduler, sampling and launch cost per engine step (vLLM v1-like)
    # CPU/synchronisation skew each all-reduce pays per participating GPU (Vidur's
    # nccl_cpu_skew_overhead_per_device): 0 under CUDA graphs; on eager stacks it grows a layer's latency with TP
    # until TP8 decodes no faster than TP4
    allreduce_skew_s_per_gpu: float = 0.0
    decode_attention_scale: float = 1.0  # multiplies decode attention apart from prefill's (attention_scale)
    # CPU cost of launching each all-reduce, on top of its kernel time (Vidur's nccl_cpu_launch_overhead_ms,
    # 0.02 ms); 0 when the stack replays CUDA graphs or the kernel timings already include it
    allreduce_launch_s: float = 0.0


# The stack Vidur's simulator puts around its per-op profiles (vidur/config/config.py defaults): no CPU overhead
# per step (skip_cpu_overhead_modeling; it has no H100 CPU profiles), 0.02 ms NCCL launch per all-reduce, no
# per-device skew, and a 10% batching overhead on decode attention (attention_decode_batching_overhead_fraction).
# ``calibrate_from_profiles`` gives its families this stack: the kernel timings in those profiles carry none of it.
VIDUR_STACK = StackFactors(iteration_overhead_s=0.0, allreduce_launch_s=2e-5, decode_attention_scale=1.1)


@dataclass(frozen=True, slots=True)
class GpuCalibration:
    """Efficiencies of one GPU family against its datasheet peaks; times in seconds, bandwidths GB/s."""

    gemm_overhead_s: float = 5e-6
    gemm_blend: float = 1.3
    gemm_compute_eff: dict[str, float] = field(default_factory=lambda: dict.fromkeys(GEMM_OPS, 0.74))
    gemm_memory_eff: dict[str, float] = field(default_factory=lambda: dict.fromkeys(GEMM_OPS, 0.9))
    elem_overhead_s: float = 3e-6
    # the shortest time of each elementwise op where measured (a norm on a few tokens takes ~6 us on H100, an add
    # ~2 us, neither the launch cost plus its bytes); missing ops have none
    elem_floor_s: dict[str, float] = field(default_factory=dict)
    elem_memory_eff: dict[str, float] = field(default_factory=lambda: dict.fromkeys(ELEMENTWISE_OPS, 0.6))
    # Attention kernels are not in the shared profiles: FlashAttention-2-class priors (about 45% of bf16 peak in
    # prefill, 70% of HBM bandwidth when decoding over a paged KV cache); users refine them with `perf fit`.
    attn_compute_eff: float = 0.45
    attn_memory_eff: float = 0.70
    attn_overhead_s: float = 6e-6
    # Decode attention (one query per sequence over a paged KV cache) is its own kernel: fitted apart where
    # measured (aiconfigurator's generation_attention); None = the prefill figures above.
    decode_attn_compute_eff: float | None = None
    decode_attn_memory_eff: float | None = None
    decode_attn_overhead_s: float | None = None
    # Intra-node ring all-reduce, by number of workers: (alpha seconds, bus bandwidth GB/s).
    allreduce: dict[int, tuple[float, float]] = field(
        default_factory=lambda: {2: (1.5e-5, 150.0), 4: (2e-5, 180.0), 8: (2.5e-5, 200.0)}
    )
    # The smallest all-reduce time by number of workers, where measured: NCCL's small-message latency (Vidur's
    # H100 profile is flat at ~40 us up to ~3 MB, above the alpha of the linear fit); none = alpha-beta only.
    allreduce_floor_s: dict[int, float] = field(default_factory=dict)
    p2p_intra: tuple[float, float] = (8e-6, 300.0)
    p2p_inter: tuple[float, float] = (2e-5, 40.0)
    source: str = "priors"
    stack: StackFactors = field(default_factory=StackFactors)

    def allreduce_s(self, size_bytes: float | np.ndarray, workers: int) -> np.ndarray | float:
        """Ring all-reduce time of ``size_bytes`` across ``workers`` GPUs of one node."""
        if workers <= 1:
            return 0.0 * np.asarray(size_bytes, dtype=float)
        n = _nearest_size(tuple(self.allreduce), workers)
        alpha, busbw = self.allreduce[n]
        algo = 2.0 * (workers - 1) / workers
        kernel = alpha + algo * np.asarray(size_bytes, dtype=float) / (busbw * 1e9)
        if self.allreduce_floor_s:
            kernel = np.maximum(
                kernel, self.allreduce_floor_s[_nearest_size(tuple(self.allreduce_floor_s), n)]
            )
        cpu = self.stack.allreduce_launch_s + self.stack.allreduce_skew_s_per_gpu * workers
        return self.stack.comm_scale * kernel + cpu

    def elem_s(self, op: str, bytes_: float | np.ndarray, peak_bytes_per_s: float) -> np.ndarray | float:
        """Time of one elementwise op moving ``bytes_``: launch plus bytes at its efficiency, not below its floor."""
        t = self.elem_overhead_s + np.asarray(bytes_, dtype=float) / (
            peak_bytes_per_s * self.elem_memory_eff[op]
        )
        return np.maximum(t, self.elem_floor_s.get(op, 0.0))

    def p2p_s(self, size_bytes: float, inter_node: bool) -> float:
        alpha, bw = self.p2p_inter if inter_node else self.p2p_intra
        return self.stack.comm_scale * (alpha + size_bytes / (bw * 1e9))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["allreduce"] = {str(k): list(v) for k, v in self.allreduce.items()}
        out["allreduce_floor_s"] = {str(k): v for k, v in self.allreduce_floor_s.items()}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GpuCalibration:
        try:
            data = dict(data)
            data["allreduce"] = {
                int(k): (float(v[0]), float(v[1])) for k, v in data.get("allreduce", {}).items()
            }
            data["allreduce_floor_s"] = {
                int(k): float(v) for k, v in data.get("allreduce_floor_s", {}).items()
            }
            for key in ("p2p_intra", "p2p_inter"):
                if key in data:
                    data[key] = (float(data[key][0]), float(data[key][1]))
            data["stack"] = StackFactors(**data.get("stack", {}))
            return cls(**data)
        except (TypeError, ValueError, IndexError, AttributeError) as exc:
            raise CalibrationError(f"malformed GPU calibration: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Calibration:
    """Calibrations by GPU family key (``h100``, ``a100``), plus per-GPU-name overrides from ``perf fit``."""

    families: dict[str, GpuCalibration]
    per_gpu: dict[str, GpuCalibration] = field(default_factory=dict)
    note: str = ""

    def for_gpu(self, gpu: GpuSpec) -> GpuCalibration:
        """The calibration for a GPU type: a fitted override by name, else its aiconfigurator system's, else its
        Vidur profile family's, else the nearest family (Ampere-class figures for GPUs no data covers, e.g.
        A10G)."""
        if gpu.name in self.per_gpu:
            return self.per_gpu[gpu.name]
        family_system = {"h100": "h100_sxm", "a100": "a100_sxm"}.get(gpu.calibration_key, "")
        for key in (
            gpu.system_key,
            gpu.calibration_key,
            family_system,
            "a100_sxm",
            "a100",
            "h100_sxm",
            "h100",
        ):
            if key and key in self.families:
                return self.families[key]
        if self.families:
            return next(iter(self.families.values()))
        return GpuCalibration()

    def with_gpu(self, gpu_name: str, calib: GpuCalibration) -> Calibration:
        return replace(self, per_gpu={**self.per_gpu, gpu_name: calib})

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": 1,
                "note": self.note,
                "families": {k: v.to_dict() for k, v in self.families.items()},
                "per_gpu": {k: v.to_dict() for k, v in self.per_gpu.items()},
            },
            indent=2,
            sort_keys=True,
        )

    def save(self, path: Path | str) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, path: Path | str) -> Calibration:
        data = read_structured(path, what="calibration file", error=CalibrationError, syntax="json")
        return cls.from_mapping(data, str(path))

    @classmethod
    def from_mapping(cls, data: Any, source: str = "calibration") -> Calibration:
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("families"), dict)
            or not isinstance(data.get("per_gpu", {}), dict)
        ):
            raise CalibrationError(
                f"{source}: expected a JSON object with 'families' (and optional 'per_gpu') mapping names to calibrations (written by `oserve perf "
                "calibrate` or `oserve perf fit`)"
            )
        try:
            return cls(
                families={k: GpuCalibration.from_dict(v) for k, v in data["families"].items()},
                per_gpu={k: GpuCalibration.from_dict(v) for k, v in data.get("per_gpu", {}).items()},
                note=str(data.get("note", "")),
            )
        except CalibrationError as exc:
            raise CalibrationError(f"{source}: {exc}") from exc


@cache
def builtin_calibration(name: str = "vllm") -> Calibration:
    """A calibration shipped with OServe: ``vllm`` (the default: today's vLLM from aiconfigurator's silicon
    database) or ``vidur`` (Vidur's per-op profiles in ``../shared/data/profiles``, a 2023 stack); both written
    by ``oserve perf calibrate``."""
    files = {"vllm": "calibration.json", "vidur": "calibration-vidur.json"}
    if name not in files:
        raise CalibrationError(f"unknown built-in calibration {name!r}; expected one of {', '.join(files)}")
    text = resources.files("oserve.data").joinpath(files[name]).read_text()
    return Calibration.from_mapping(json.loads(text), f"built-in calibration {name!r}")


# -- fitting to per-op profiles --------------------------------------------------------------------------------


def _shape_of(rows: pd.DataFrame) -> LayerShape:
    r = rows.iloc[0]
    tp = int(r["tp"])
    head_dim = int(r["n_embd"]) // int(r["n_head"])
    return LayerShape.of(
        int(r["n_embd"]),
        int(r["n_head"]),
        int(r["n_kv_head"]),
        head_dim,
        int(r["n_expanded_embd"]),
        tp,
        gated=bool(r["use_gated_mlp"]),
    )


def _work_table(profiles: pd.DataFrame) -> pd.DataFrame:
    """Attach FLOPs and bytes to every profile row."""
    parts = []
    for (_, _tp), rows in profiles.groupby(["file", "tp"], sort=False):
        shape = _shape_of(rows)
        rows = rows.copy()
        flops = np.zeros(len(rows))
        bytes_ = np.zeros(len(rows))
        tokens = rows["num_tokens"].to_numpy(float)
        for op in rows["op"].unique():
            mask = (rows["op"] == op).to_numpy()
            if op in GEMM_OPS:
                f, b = shape.gemm_work(op, tokens[mask])
                flops[mask], bytes_[mask] = f, b
            else:
                bytes_[mask] = shape.elementwise_bytes(op, tokens[mask])
        rows["flops"] = flops
        rows["bytes"] = bytes_
        parts.append(rows)
    return pd.concat(parts, ignore_index=True)


def _fit_gemm(table: pd.DataFrame, gpu: GpuSpec) -> dict[str, Any]:
    rows = table[table["op"].isin(GEMM_OPS) & (table["num_tokens"] >= _GEMM_FIT_MIN_TOKENS)]
    op_index = rows["op"].map({op: i for i, op in enumerate(GEMM_OPS)}).to_numpy()
    flops, bytes_, seconds = (rows[c].to_numpy(float) for c in ("flops", "bytes", "seconds"))
    peak_b = gpu.hbm_gb_per_s * 1e9
    n_ops = len(GEMM_OPS)

    def residual(p: np.ndarray) -> np.ndarray:
        ec, em = p[2 : 2 + n_ops][op_index], p[2 + n_ops :][op_index]
        tc = flops / (gpu.bf16_flops * ec)
        tm = bytes_ / (peak_b * em)
        pred = p[0] * 1e-6 + (tc ** p[1] + tm ** p[1]) ** (1 / p[1])
        return pred / seconds - 1.0

    p0 = np.array([4.0, 1.5, *([0.7] * n_ops), *([0.9] * n_ops)])
    lo = np.array([0.0, 1.0, *([0.05] * (2 * n_ops))])
    hi = np.array([50.0, 8.0, *([1.2] * (2 * n_ops))])
    fit = least_squares(residual, p0, bounds=(lo, hi), loss="soft_l1", f_scale=0.05)
    p = fit.x
    return {
        "gemm_overhead_s": float(p[0] * 1e-6),
        "gemm_blend": float(p[1]),
        "gemm_compute_eff": {op: float(p[2 + i]) for i, op in enumerate(GEMM_OPS)},
        "gemm_memory_eff": {op: float(p[2 + n_ops + i]) for i, op in enumerate(GEMM_OPS)},
    }


def _fit_elementwise(table: pd.DataFrame, gpu: GpuSpec) -> dict[str, Any]:
    """A launch cost, an HBM efficiency per op and a floor per op, on every token count: decode steps run these
    ops on a few tokens, where the time is flat at the floor (a norm's ~6 us on H100 against an add's ~2 us)."""
    rows = table[table["op"].isin(ELEMENTWISE_OPS)]
    ops = [op for op in ELEMENTWISE_OPS if op in set(rows["op"])]
    n = len(ops)
    op_index = rows["op"].map({op: i for i, op in enumerate(ops)}).to_numpy()
    bytes_, seconds = rows["bytes"].to_numpy(float), rows["seconds"].to_numpy(float)

    def residual(p: np.ndarray) -> np.ndarray:
        line = p[0] * 1e-6 + bytes_ / (gpu.hbm_gb_per_s * 1e9 * p[1 : 1 + n][op_index])
        return np.maximum(line, p[1 + n :][op_index] * 1e-6) / seconds - 1.0

    fit = least_squares(
        residual,
        # floors start at each op's fastest time: a floor below every line has no gradient to move it
        np.array([3.0, *([0.5] * n), *(float(seconds[op_index == i].min()) * 1e6 for i in range(n))]),
        bounds=([0.0] + [0.02] * n + [0.0] * n, [50.0] + [1.5] * n + [100.0] * n),
        loss="soft_l1",
        f_scale=0.05,
    )
    return {
        "elem_overhead_s": float(fit.x[0] * 1e-6),
        "elem_memory_eff": {op: float(fit.x[1 + i]) for i, op in enumerate(ops)},
        "elem_floor_s": {op: float(fit.x[1 + n + i] * 1e-6) for i, op in enumerate(ops)},
    }


def fit_alpha_beta(rows: pd.DataFrame, algo_factor: float) -> tuple[float, float]:
    """Fit ``t = alpha + algo_factor * size / bw`` on relative error; returns (alpha s, bw GB/s)."""
    size, seconds = rows["size_bytes"].to_numpy(float), rows["seconds"].to_numpy(float)

    def residual(p: np.ndarray) -> np.ndarray:
        return (p[0] * 1e-6 + algo_factor * size / (p[1] * 1e9)) / seconds - 1.0

    fit = least_squares(
        residual, np.array([20.0, 100.0]), bounds=([0.0, 0.1], [5000.0, 5000.0]), loss="soft_l1", f_scale=0.1
    )
    return float(fit.x[0] * 1e-6), float(fit.x[1])


def fit_alpha_beta_floor(rows: pd.DataFrame, algo_factor: float) -> tuple[float, float, float]:
    """Fit ``t = max(floor, alpha + algo_factor * size / bw)`` on relative error; returns (alpha s, bw GB/s,
    floor s). The floor is NCCL's small-message latency, which a straight line through all sizes undercuts."""
    size, seconds = rows["size_bytes"].to_numpy(float), rows["seconds"].to_numpy(float)
    alpha0, bw0 = fit_alpha_beta(rows, algo_factor)

    def residual(p: np.ndarray) -> np.ndarray:
        line = p[0] * 1e-6 + algo_factor * size / (p[1] * 1e9)
        return np.maximum(line, p[2] * 1e-6) / seconds - 1.0

    small = seconds[size <= np.quantile(size, 0.1)]
    x0 = np.array([alpha0 * 1e6, bw0, float(np.median(small)) * 1e6])
    fit = least_squares(
        residual, x0, bounds=([0.0, 0.1, 0.0], [5000.0, 5000.0, 5000.0]), loss="soft_l1", f_scale=0.1
    )
    return float(fit.x[0] * 1e-6), float(fit.x[1]), float(fit.x[2] * 1e-6)


def _fit_collectives(coll: pd.DataFrame) -> dict[str, Any]:
    """Alpha-beta fits per collective; empty when there are no collective timings (priors stay)."""
    out: dict[str, Any] = {}
    if coll.empty or "collective" not in coll.columns:
        return out
    ar = coll[(coll["collective"] == "all_reduce") & coll["intra_node"]]
    if len(ar):
        fits = {
            int(n): fit_alpha_beta_floor(rows, 2.0 * (n - 1) / n) for n, rows in ar.groupby("num_workers")
        }
        out["allreduce"] = {n: (alpha, bw) for n, (alpha, bw, _) in fits.items()}
        out["allreduce_floor_s"] = {n: floor for n, (_, _, floor) in fits.items()}
    sr = coll[coll["collective"] == "send_recv"]
    for intra, key in ((True, "p2p_intra"), (False, "p2p_inter")):
        rows = sr[sr["intra_node"] == intra]
        if len(rows):
            out[key] = fit_alpha_beta(rows, 1.0)
    return out


def calibrate_from_profiles(root: Path | str, gpu_keys: list[str] | None = None) -> Calibration:
    """Fit every GPU family found under ``root`` (folders of ``*.mlp.csv``; ``network/`` collectives)."""
    root = Path(root)
    profiles = load_mlp_profiles(root)
    try:
        collectives = load_collective_profiles(root)
    except CalibrationError:
        collectives = pd.DataFrame(columns=["gpu_key"])
    families: dict[str, GpuCalibration] = {}
    for key in sorted(profiles["gpu_key"].unique()):
        if gpu_keys and key not in gpu_keys:
            continue
        gpu = get_gpu(_REFERENCE_GPU.get(key, key))
        table = _work_table(profiles[profiles["gpu_key"] == key])
        params: dict[str, Any] = {**_fit_gemm(table, gpu), **_fit_elementwise(table, gpu)}
        params.update(_fit_collectives(collectives[collectives["gpu_key"] == key]))
        files = sorted(table["file"].unique())
        params["source"] = (
            f"fitted to {len(table)} op timings in {key}/ ({', '.join(files)}) against {gpu.name} peaks"
        )
        families[key] = GpuCalibration(**params, stack=VIDUR_STACK)
    if not families:
        raise CalibrationError(f"no GPU family to calibrate under {root}")
    return Calibration(families=families, note=f"oserve perf calibrate --source vidur --profiles {root.name}")


def predict_profile_ops(profiles: pd.DataFrame, calibration: Calibration) -> pd.DataFrame:
    """Profile rows (from :func:`load_mlp_profiles`) with the calibrated model's ``predicted_seconds``."""
    table = _work_table(profiles)
    pred = np.zeros(len(table))
    for key, idx in table.groupby("gpu_key").groups.items():
        gpu = get_gpu(_REFERENCE_GPU.get(str(key), str(key)))
        c = calibration.families.get(str(key)) or calibration.for_gpu(gpu)
        rows = table.loc[idx]
        for op, sub in rows.groupby("op"):
            if op in GEMM_OPS:
                t = roofline(
                    sub["flops"],
                    sub["bytes"],
                    gpu.bf16_flops,
                    gpu.hbm_gb_per_s * 1e9,
                    c.gemm_compute_eff[str(op)],
                    c.gemm_memory_eff[str(op)],
                    c.gemm_overhead_s,
                    c.gemm_blend,
                )
            else:
                t = c.elem_s(str(op), sub["bytes"].to_numpy(float), gpu.hbm_gb_per_s * 1e9)
            pred[table.index.get_indexer(sub.index)] = np.asarray(t, dtype=float)
    table["predicted_seconds"] = pred
    return table


@lru_cache(maxsize=256)
def _nearest_size(known: tuple[int, ...], workers: int) -> int:
    """The measured all-reduce size closest to ``workers`` in log2 (ties to the smaller)."""
    return min(sorted(known), key=lambda k: (abs(math.log2(k) - math.log2(workers)), k))

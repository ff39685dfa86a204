"""Readers for per-operator GPU profiles in the Vidur CSV format (``*.mlp.csv``, ``*.all_reduce.csv``,
``*.send_recv.csv``), as shipped in ``../shared/data/profiles`` and written by ``oserve profile``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from oserve.errors import CalibrationError
from oserve.files import shared_data_dir

__all__ = [
    "MLP_OPS",
    "SHAPE_COLUMNS",
    "default_profiles_dir",
    "load_collective_profiles",
    "load_mlp_profiles",
]

# Non-attention ops of one transformer layer, in the profiles' column order.
MLP_OPS = (
    "emb",
    "input_layernorm",
    "attn_pre_proj",
    "attn_rope",
    "attn_post_proj",
    "post_attention_layernorm",
    "mlp_up_proj",
    "mlp_act",
    "mlp_down_proj",
    "add",
)
SHAPE_COLUMNS = (
    "n_head",
    "n_kv_head",
    "n_embd",
    "n_expanded_embd",
    "vocab_size",
    "use_gated_mlp",
    "num_tokens",
    "num_tensor_parallel_workers",
)


def default_profiles_dir() -> Path | None:
    """``profiles/`` of the shared reference data (``../shared/data`` beside the checkout), when present."""
    root = shared_data_dir()
    return root / "profiles" if root is not None and (root / "profiles").is_dir() else None


def _gpu_key_of(path: Path) -> str:
    """``h100/Llama-2-7b-hf.mlp.csv`` -> ``h100``; ``network/h100_dgx.all_reduce.csv`` -> ``h100``."""
    if path.parent.name.lower() not in ("network", "profiles", ""):
        return path.parent.name.lower()
    return path.name.split("_")[0].split(".")[0].lower()


def load_mlp_profiles(root: Path | str, gpu_key: str | None = None) -> pd.DataFrame:
    """All ``*.mlp.csv`` under ``root`` as one long frame: one row per (file, op, tp, num_tokens) with
    ``seconds`` (the median) and the model shape columns. ``gpu_key`` filters by the folder name."""
    root = Path(root)
    files = sorted(root.rglob("*.mlp.csv")) if root.is_dir() else [root]
    frames = []
    for path in files:
        key = _gpu_key_of(path)
        if gpu_key is not None and key != gpu_key:
            continue
        try:
            raw = pd.read_csv(path)
        except (OSError, pd.errors.ParserError) as exc:
            raise CalibrationError(f"{path}: cannot read profile: {exc}") from exc
        missing = [c for c in SHAPE_COLUMNS if c not in raw.columns]
        if missing:
            raise CalibrationError(f"{path}: not a per-op profile; missing columns {missing}")
        ops = [op for op in MLP_OPS if f"time_stats.{op}.median" in raw.columns]
        if not ops:
            raise CalibrationError(f"{path}: no time_stats.<op>.median columns")
        shape = raw[list(SHAPE_COLUMNS)]
        for op in ops:
            part = shape.copy()
            part["op"] = op
            part["seconds"] = raw[f"time_stats.{op}.median"].astype(float) * 1e-3
            part["file"] = path.name
            part["gpu_key"] = key
            frames.append(part)
    if not frames:
        raise CalibrationError(f"no *.mlp.csv profiles under {root}" + (f" for {gpu_key}" if gpu_key else ""))
    out = pd.concat(frames, ignore_index=True)
    out = out.rename(columns={"num_tensor_parallel_workers": "tp"})
    out["use_gated_mlp"] = out["use_gated_mlp"].astype(str).str.lower().isin(["true", "1"])
    return out[np.isfinite(out["seconds"]) & (out["seconds"] > 0)].reset_index(drop=True)


def load_collective_profiles(root: Path | str, gpu_key: str | None = None) -> pd.DataFrame:
    """All ``*.all_reduce.csv`` / ``*.send_recv.csv`` under ``root``: ``gpu_key, collective, num_workers,
    devices_per_node, size_bytes, seconds`` (median). ``intra_node`` marks runs inside one node."""
    root = Path(root)
    files = (
        sorted([*root.rglob("*.all_reduce.csv"), *root.rglob("*.send_recv.csv")]) if root.is_dir() else [root]
    )
    frames = []
    for path in files:
        key = _gpu_key_of(path)
        if gpu_key is not None and key != gpu_key:
            continue
        raw = pd.read_csv(path)
        collective = str(raw["collective"].iloc[0])
        frame = pd.DataFrame(
            {
                "gpu_key": key,
                "collective": collective,
                "num_workers": raw["num_workers"].astype(int),
                "devices_per_node": raw["devices_per_node"].astype(int),
                "size_bytes": raw["size"].astype(float),
                "seconds": raw[f"time_stats.{collective}.median"].astype(float) * 1e-3,
            }
        )
        frames.append(frame)
    if not frames:
        raise CalibrationError(f"no collective profiles under {root}")
    out = pd.concat(frames, ignore_index=True)
    out["intra_node"] = out["devices_per_node"] >= out["num_workers"]
    return out

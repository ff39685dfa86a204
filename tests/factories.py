"""Shared test factories: small, valid specs with keyword overrides (``make_model(num_layers=4)``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from oserve.spec import ModelSpec, ReplicaConfig, get_gpu
from oserve.trace import Trace

__all__ = [
    "hf_config",
    "long_blend",
    "make_model",
    "make_replica",
    "make_trace",
    "write_config",
    "write_points",
]


def make_model(**overrides: Any) -> ModelSpec:
    """A small GQA Llama-like model (2 layers, hidden 256, 4 heads / 2 KV heads)."""
    fields: dict[str, Any] = {
        "name": "tiny",
        "num_layers": 2,
        "hidden_size": 256,
        "num_heads": 4,
        "num_kv_heads": 2,
        "head_dim": 64,
        "intermediate_size": 688,
        "vocab_size": 1000,
        "max_position_embeddings": 8192,
    }
    fields.update(overrides)
    return ModelSpec(**fields)


def make_replica(gpu: str = "h100", tp: int = 1, pp: int = 1, **overrides: Any) -> ReplicaConfig:
    """A replica of ``tp * pp`` catalogue GPUs with default engine knobs."""
    return ReplicaConfig(get_gpu(gpu), tp=tp, pp=pp, **overrides)


def hf_config(**overrides: Any) -> dict[str, Any]:
    """A minimal Hugging Face ``config.json`` mapping for a tiny Llama; ``None`` values drop the key."""
    config: dict[str, Any] = {
        "_name_or_path": "test/tiny-llama",
        "model_type": "llama",
        "hidden_size": 256,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "num_hidden_layers": 2,
        "intermediate_size": 688,
        "vocab_size": 1000,
        "max_position_embeddings": 512,
        "torch_dtype": "bfloat16",
    }
    config.update(overrides)
    return {k: v for k, v in config.items() if v is not None}


def write_config(folder: Path, text: str | None = None, **overrides: Any) -> Path:
    """Write ``config.json`` into ``folder`` (``text`` verbatim, else ``hf_config(**overrides)``)."""
    path = folder / "config.json"
    path.write_text(text if text is not None else json.dumps(hf_config(**overrides)))
    return path


def write_points(path: Path, rows: list[dict[str, Any]], columns: list[str] | None = None) -> Path:
    """Write measurement rows as a CSV with the given column order (default: the first row's keys)."""
    columns = columns or list(rows[0])
    lines = [",".join(columns)] + [",".join(str(row.get(c, "")) for c in columns) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def make_trace(
    num_requests: int = 1000,
    *,
    rate_rps: float = 10.0,
    seed: int = 0,
    prompt_mean_tokens: float = 1000.0,
    output_mean_tokens: float = 200.0,
    name: str = "synthetic",
    **extras: Any,
) -> Trace:
    """A Poisson-arrival trace (first arrival at 0) with log-normal prompt and output lengths; extra keyword
    arguments become extra columns. Deterministic for ``seed``."""
    rng = np.random.default_rng(seed)
    arrival = np.cumsum(rng.exponential(1.0 / rate_rps, num_requests))
    arrival -= arrival[0] if num_requests else 0.0
    prompt = np.maximum(1, rng.lognormal(np.log(prompt_mean_tokens) - 0.5, 1.0, num_requests)).astype(
        np.int64
    )
    output = np.maximum(1, rng.lognormal(np.log(output_mean_tokens) - 0.5, 1.0, num_requests)).astype(
        np.int64
    )
    return Trace.from_arrays(arrival, prompt, output, name=name, extras=extras or None)


def long_blend(traces: Path, seconds: float, rate: float) -> Trace:
    """The demo's traffic: Mooncake's long documents over the Azure conv hour, the first ``seconds`` at ``rate``
    times their rate (seed 0)."""
    from oserve.trace import blend, load_trace, scale_rate, window

    both = blend(
        [load_trace(traces / "mooncake_synthetic.jsonl"), load_trace(traces / "azure_conv_2023.csv")], seed=0
    )
    return scale_rate(window(both, 0.0, seconds), rate, seed=0)

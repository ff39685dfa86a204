"""Model architecture (``ModelSpec``) read from a Hugging Face ``config.json``, and the built-in catalogue."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from oserve.errors import SpecError
from oserve.files import read_structured

__all__ = ["ModelSpec", "get_model", "list_models"]

_DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "half": 2, "float32": 4, "float": 4, "float8": 1, "fp8": 1}


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Decoder-only transformer shape; MoE when ``num_experts > 1``. Sizes in elements, bytes where named."""

    name: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int = 4096
    dtype_bytes: int = 2
    gated_mlp: bool = True
    num_experts: int = 1
    experts_per_token: int = 1
    tie_word_embeddings: bool = False
    hf_id: str = ""

    def __post_init__(self) -> None:
        for field in (
            "num_layers",
            "hidden_size",
            "num_heads",
            "num_kv_heads",
            "head_dim",
            "intermediate_size",
            "vocab_size",
            "dtype_bytes",
            "num_experts",
            "experts_per_token",
        ):
            if getattr(self, field) <= 0:
                raise SpecError(f"model {self.name!r}: {field} must be positive, got {getattr(self, field)}")
        if self.num_heads % self.num_kv_heads:
            raise SpecError(
                f"model {self.name!r}: num_attention_heads ({self.num_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_kv_heads})"
            )
        if self.experts_per_token > self.num_experts:
            raise SpecError(
                f"model {self.name!r}: num_experts_per_tok ({self.experts_per_token}) exceeds "
                f"num_local_experts ({self.num_experts})"
            )

    # -- sizes ---------------------------------------------------------------------------------------------
    @property
    def is_moe(self) -> bool:
        return self.num_experts > 1

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def attn_params_per_layer(self) -> int:
        return self.hidden_size * (self.q_size + 2 * self.kv_size) + self.q_size * self.hidden_size

    @property
    def mlp_params_per_expert(self) -> int:
        return (3 if self.gated_mlp else 2) * self.hidden_size * self.intermediate_size

    @property
    def params_per_layer(self) -> int:
        router = self.hidden_size * self.num_experts if self.is_moe else 0
        return (
            self.attn_params_per_layer
            + self.num_experts * self.mlp_params_per_expert
            + router
            + 2 * self.hidden_size
        )

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)

    @property
    def param_count(self) -> int:
        return self.num_layers * self.params_per_layer + self.embedding_params + self.hidden_size

    @property
    def active_params_per_token(self) -> int:
        """Parameters touched per token (MoE: only the routed experts)."""
        mlp = self.experts_per_token * self.mlp_params_per_expert
        return self.num_layers * (self.attn_params_per_layer + mlp) + self.embedding_params

    @property
    def weight_bytes(self) -> int:
        return self.param_count * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        """KV-cache bytes one token occupies across all layers (K and V; GQA-aware)."""
        return 2 * self.num_layers * self.kv_size * self.dtype_bytes

    # -- construction --------------------------------------------------------------------------------------
    @classmethod
    def from_hf_config(cls, config: dict[str, Any] | str | Path, name: str | None = None) -> ModelSpec:
        """Build from a Hugging Face ``config.json`` (a dict, or a path to the file or its folder)."""
        if not isinstance(config, dict):
            path = Path(config)
            if path.is_dir():
                path = path / "config.json"
            config = read_structured(path, what="model config", error=SpecError, syntax="json")
            if not isinstance(config, dict):
                raise SpecError(f"{path}: expected a JSON object")
            name = name or config.get("_name_or_path") or path.parent.name
        cfg: dict[str, Any] = config.get("text_config", config) if "hidden_size" not in config else config
        hf_id = str(config.get("_name_or_path", "") or "")
        name = name or hf_id or "custom"

        def need(*keys: str) -> int:
            for key in keys:
                if key in cfg and cfg[key] is not None:
                    value = cfg[key]
                    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
                        raise SpecError(
                            f"model {name!r}: config field {key!r} must be an integer, got {value!r}"
                        )
                    return int(value)
            raise SpecError(f"model {name!r}: config.json lacks {' / '.join(keys)}")

        hidden = need("hidden_size", "n_embd", "d_model")
        heads = need("num_attention_heads", "n_head")
        if heads <= 0:
            raise SpecError(f"model {name!r}: num_attention_heads must be positive, got {heads}")
        has_kv = cfg.get("num_key_value_heads") is not None or cfg.get("n_kv_head") is not None
        kv_heads = need("num_key_value_heads", "n_kv_head") if has_kv else heads
        head_dim = need("head_dim") if cfg.get("head_dim") is not None else hidden // heads
        has_experts = cfg.get("num_local_experts") is not None or cfg.get("num_experts") is not None
        experts = need("num_local_experts", "num_experts") if has_experts else 1
        moe_ffn = need("moe_intermediate_size") if experts > 1 and cfg.get("moe_intermediate_size") else None
        dtype = str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16").lower().replace("torch.", "")
        act = str(cfg.get("hidden_act", "silu"))
        return cls(
            name=str(name),
            hf_id=hf_id,
            num_layers=need("num_hidden_layers", "n_layer", "num_layers"),
            hidden_size=hidden,
            num_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=head_dim,
            intermediate_size=moe_ffn if moe_ffn else need("intermediate_size", "n_inner", "ffn_dim"),
            vocab_size=need("vocab_size"),
            max_position_embeddings=need("max_position_embeddings")
            if cfg.get("max_position_embeddings")
            else 4096,
            dtype_bytes=_DTYPE_BYTES.get(dtype, 2),
            gated_mlp=act in ("silu", "swiglu", "geglu") or "llama" in str(cfg.get("model_type", "")),
            num_experts=experts,
            experts_per_token=need("num_experts_per_tok")
            if experts > 1 and cfg.get("num_experts_per_tok")
            else 1,
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        )


def _short(text: str) -> str:
    """Normalise a model name: lower case, no org prefix, 'meta-llama-3' == 'llama-3', no -hf/-instruct noise."""
    text = text.strip().lower().split("/")[-1]
    text = re.sub(r"[_\s]+", "-", text).removeprefix("meta-")
    stripped = None
    while stripped != text:  # e.g. Mixtral-8x7B-Instruct-v0.1: strip -v0.1, then -instruct
        stripped = text
        for suffix in ("-hf", "-chat", "-instruct", "-v0.1"):
            text = text.removesuffix(suffix)
    return text


@cache
def _catalogue() -> dict[str, ModelSpec]:
    out: dict[str, ModelSpec] = {}
    for entry in sorted(resources.files("oserve.data.models").iterdir(), key=lambda p: p.name):
        if not entry.name.endswith(".json"):
            continue
        config = json.loads(entry.read_text())
        spec = ModelSpec.from_hf_config(config, name=_short(config["_name_or_path"]))
        out[spec.name] = spec
    return out


def list_models() -> list[str]:
    """Short names of the built-in models."""
    return sorted(_catalogue())


def get_model(name: str | Path) -> ModelSpec:
    """A catalogue model by short name (``llama-2-70b``) or HF id (``meta-llama/Llama-2-70b-hf``),
    or any ``config.json`` path."""
    text = str(name)
    if text.endswith(".json") or (Path(text).is_dir() and (Path(text) / "config.json").exists()):
        return ModelSpec.from_hf_config(Path(text))
    catalogue = _catalogue()
    key = _short(text)
    if key in catalogue:
        return catalogue[key]
    raise SpecError(
        f"unknown model {text!r}; built-in models: {', '.join(list_models())}; "
        "or pass the path of a Hugging Face config.json"
    )

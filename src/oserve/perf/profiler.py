"""Per-operator profiler: time one transformer layer's ops on this machine, in Vidur's ``*.mlp.csv`` format.

Each non-attention op of one layer is built with random weights, sharded as tensor parallelism shards it
(column-parallel QKV and MLP-up, row-parallel O and MLP-down, a ``vocab/tp`` embedding shard), and timed over
``repeats`` layer steps after ``warmup`` ones -- CUDA events on a GPU, ``time.perf_counter`` on the CPU -- as
Vidur's ``profiling/mlp`` does (Agrawal et al., MLSys 2024). Optionally, causal prefill and decode attention
(``scaled_dot_product_attention``) go to a second table. ``run()`` returns the tables, ``write_profile()``
saves them. PyTorch is the ``profile`` extra and is imported only inside the functions that need it.
"""

from __future__ import annotations

import json
import platform
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from oserve.errors import ConfigError
from oserve.perf.profiles import MLP_OPS, SHAPE_COLUMNS
from oserve.spec.model import ModelSpec

__all__ = [
    "ATTENTION_COLUMNS",
    "OPS",
    "PROFILE_COLUMNS",
    "ProfileResult",
    "ProfileSettings",
    "device_tag",
    "run",
    "write_profile",
]

OPS = MLP_OPS
STATS = ("min", "max", "mean", "median", "std")
#: Exactly the header of Vidur's ``*.mlp.csv`` profiles (``../shared/data/profiles``); times in ms.
PROFILE_COLUMNS = tuple(f"time_stats.{op}.{s}" for op in OPS for s in STATS) + SHAPE_COLUMNS
#: OServe's attention table: one row per (phase, batch, context, TP); times in ms for one layer's attention.
ATTENTION_COLUMNS = (
    *(f"time_stats.attention.{s}" for s in STATS),
    "phase",
    "batch_size",
    "context_tokens",
    "num_tokens",
    "n_head",
    "n_kv_head",
    "head_dim",
    "num_tensor_parallel_workers",
)

_DTYPES = {
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp16": "float16",
    "float16": "float16",
    "fp32": "float32",
    "float32": "float32",
}
_INSTALL = "PyTorch is not installed; install the profile extra: pip install 'oserve[profile]'"
Progress = Callable[[str], None]


def _torch() -> Any:
    """Import torch lazily, translating its absence into a clear OServe error."""
    try:
        import torch
    except ImportError as exc:
        raise ConfigError(_INSTALL) from exc
    return torch


@dataclass(frozen=True, slots=True)
class ProfileSettings:
    """What to measure. ``repeats``/``warmup`` of ``None`` mean 20/2 on CUDA (Vidur's) and 5/1 on the CPU."""

    num_tokens: tuple[int, ...] = (1, 16, 64, 256, 1024, 4096)
    tp_degrees: tuple[int, ...] = (1,)
    repeats: int | None = None
    warmup: int | None = None
    device: str = "auto"  # auto | cuda | cpu
    # auto: bf16 on CUDA, fp32 on the CPU (bf16 GEMMs ran ~6x slower than fp32 on an AVX2 EPYC here)
    dtype: str = "auto"
    attention: bool = False
    prefill_context_tokens: tuple[int, ...] = (128, 512, 2048)
    #: (batch, context tokens) per decode point
    decode_points: tuple[tuple[int, int], ...] = ((1, 1024), (16, 1024), (64, 2048))
    #: skip points estimated to overrun this many seconds; 0: no limit; None: none on CUDA, 45 s on the CPU
    max_seconds: float | None = None
    seed: int = 0
    #: CPU only: intra-op threads for the run (None: torch's default). Fewer threads than cores steadies
    #: timings on a shared machine, where a descheduled OpenMP worker stalls every op by a time slice.
    cpu_threads: int | None = None

    def __post_init__(self) -> None:
        if not self.num_tokens or min(self.num_tokens) <= 0:
            raise ConfigError(f"num_tokens must be positive integers, got {self.num_tokens}")
        if not self.tp_degrees or min(self.tp_degrees) <= 0:
            raise ConfigError(f"tp degrees must be positive integers, got {self.tp_degrees}")
        if self.repeats is not None and self.repeats < 1:
            raise ConfigError(f"repeats must be at least 1, got {self.repeats}")
        if self.warmup is not None and self.warmup < 0:
            raise ConfigError(f"warmup must be non-negative, got {self.warmup}")
        if self.device not in ("auto", "cuda", "cpu"):
            raise ConfigError(f"device must be auto, cuda or cpu, got {self.device!r}")
        if self.dtype != "auto" and self.dtype not in _DTYPES:
            raise ConfigError(f"dtype must be auto or one of {', '.join(_DTYPES)}, got {self.dtype!r}")
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise ConfigError(f"cpu_threads must be at least 1, got {self.cpu_threads}")
        if self.max_seconds is not None and self.max_seconds < 0:
            raise ConfigError(f"max_seconds must be >= 0 (0 = no limit), got {self.max_seconds}")


@dataclass(frozen=True, slots=True)
class ProfileResult:
    """Measured tables plus how they were measured (written beside them as ``<model>.profile.json``)."""

    model: str
    device: str
    dtype: str
    timer: str
    repeats: int
    warmup: int
    torch_version: str
    ops: pd.DataFrame
    attention: pd.DataFrame | None = None
    skipped: tuple[str, ...] = ()
    elapsed_s: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)


# -- shapes ------------------------------------------------------------------------------------------------
def _shard(model: ModelSpec, tp: int) -> dict[str, int]:
    """Per-GPU sizes under TP ``tp``; KV heads are replicated when ``tp`` exceeds them, as vLLM does."""
    if model.num_heads % tp or (model.num_kv_heads % tp and tp % model.num_kv_heads):
        raise ConfigError(
            f"model {model.name!r}: TP {tp} does not divide its {model.num_heads} attention "
            f"heads / {model.num_kv_heads} KV heads; choose a TP degree that does"
        )
    heads, kv_heads, d = model.num_heads // tp, max(1, model.num_kv_heads // tp), model.head_dim
    inter = -(-model.intermediate_size // tp)  # ceil division
    return {
        "heads": heads,
        "kv_heads": kv_heads,
        "q": heads * d,
        "kv": kv_heads * d,
        "inter": inter,
        "up": 2 * inter if model.gated_mlp else inter,
        "vocab": -(-model.vocab_size // tp),
    }


def _layer_flops(model: ModelSpec, tokens: int, tp: int) -> float:
    s = _shard(model, tp)
    gemm = (
        model.hidden_size * (s["q"] + 2 * s["kv"])
        + s["q"] * model.hidden_size
        + model.hidden_size * (s["up"] + s["inter"])
    )
    return 2.0 * tokens * gemm + 20.0 * tokens * model.hidden_size


class _Budget:
    """Skip a point when the nearest cheaper measured one, scaled by FLOPs, says it would overrun."""

    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline
        self.seen: list[tuple[float, float]] = []  # (flops, seconds)

    def fits(self, flops: float) -> bool:
        if self.deadline is None or not self.seen:
            return self.deadline is None or time.perf_counter() < self.deadline
        below = [(f, s) for f, s in self.seen if f <= flops]
        f0, s0 = max(below) if below else min(self.seen)
        return time.perf_counter() + s0 * max(1.0, flops / f0) <= self.deadline

    def record(self, flops: float, seconds: float) -> None:
        self.seen.append((flops, seconds))


# -- timing ------------------------------------------------------------------------------------------------
class _Timer:
    """Times named calls: CUDA events (read after one synchronize), or perf_counter around CPU syncs."""

    def __init__(self, torch: Any, cuda: bool) -> None:
        self.torch, self.cuda = torch, cuda
        self.active = False
        self.samples: dict[str, list[Any]] = {}

    def __call__(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        if not self.active:
            return fn(*args)
        if self.cuda:
            start, end = (self.torch.cuda.Event(enable_timing=True) for _ in range(2))
            start.record()
            out = fn(*args)
            end.record()
            self.samples.setdefault(name, []).append((start, end))
            return out
        self.torch.cpu.synchronize()
        t0 = time.perf_counter()
        out = fn(*args)
        self.torch.cpu.synchronize()
        self.samples.setdefault(name, []).append((time.perf_counter() - t0) * 1e3)
        return out

    def stats(self) -> dict[str, float]:
        """``time_stats.<op>.<stat>`` in ms over the recorded samples (population std, as Vidur)."""
        if self.cuda:
            self.torch.cuda.synchronize()
        out: dict[str, float] = {}
        for name, samples in self.samples.items():
            ms = np.array([s.elapsed_time(e) for s, e in samples] if self.cuda else samples, dtype=float)
            values = (ms.min(), ms.max(), ms.mean(), float(np.median(ms)), ms.std())
            out.update({f"time_stats.{name}.{stat}": float(v) for stat, v in zip(STATS, values, strict=True)})
        return out


def _measure(step: Callable[[_Timer], Any], timer: _Timer, warmup: int, repeats: int) -> dict[str, float]:
    timer.active, timer.samples = False, {}
    for _ in range(warmup):
        step(timer)
    timer.active = True
    for _ in range(repeats):
        step(timer)
    return timer.stats()


def _layer_weights(
    torch: Any, model: ModelSpec, tp: int, dtype: Any, device: str, gen: Any
) -> dict[str, Any]:
    """TP shard 0 of one layer's weights (uniform in +-0.02) and the rotary cos/sin cache."""
    s, hidden, d = _shard(model, tp), model.hidden_size, model.head_dim

    def rand(*shape: int) -> Any:
        return torch.empty(shape, dtype=dtype, device=device).uniform_(-0.02, 0.02, generator=gen)

    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, d, 2, device=device, dtype=torch.float32) / d))
    angles = torch.outer(torch.arange(model.max_position_embeddings, device=device).float(), inv_freq)
    # A row gather's cost does not depend on the values, and filling a 128k-row table randomly takes
    # seconds on a CPU, so the embedding shard is constant-filled; GEMM weights are random.
    return {
        "emb": torch.full((s["vocab"], hidden), 0.01, dtype=dtype, device=device),
        "ln1": rand(hidden) + 1,
        "ln2": rand(hidden) + 1,
        "qkv": rand(s["q"] + 2 * s["kv"], hidden),
        "o": rand(hidden, s["q"]),
        "up": rand(s["up"], hidden),
        "down": rand(hidden, s["inter"]),
        "cos": angles.cos().to(dtype),
        "sin": angles.sin().to(dtype),
    }


def _layer_step(
    torch: Any, model: ModelSpec, tp: int, tokens: int, w: dict[str, Any], gen: Any
) -> Callable[[_Timer], Any]:
    """One layer's non-attention ops on TP shard 0 in Vidur's order; attention output is a random stand-in."""
    f, s, hidden, d = torch.nn.functional, _shard(model, tp), model.hidden_size, model.head_dim
    device, dtype = w["emb"].device, w["emb"].dtype
    ids = torch.randint(0, s["vocab"], (tokens,), device=device, generator=gen)
    positions = torch.arange(tokens, device=device) % model.max_position_embeddings
    attn_out = torch.empty((tokens, s["q"]), dtype=dtype, device=device).uniform_(-1, 1, generator=gen)

    def rope(q: Any, k: Any) -> tuple[Any, Any]:  # neox-style rotary embedding over the shard's q and k heads
        cos, sin = w["cos"][positions].unsqueeze(1), w["sin"][positions].unsqueeze(1)

        def rotate(x: Any) -> Any:
            x1, x2 = x.unflatten(-1, (-1, d)).chunk(2, dim=-1)
            return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).flatten(-2)

        return rotate(q), rotate(k)

    def act(x: Any) -> Any:  # SiLU(gate) * up on a gated MLP, GELU otherwise
        return f.silu(x[:, : s["inter"]]) * x[:, s["inter"] :] if model.gated_mlp else f.gelu(x)

    def step(t: _Timer) -> Any:
        x = t("emb", f.embedding, ids, w["emb"])
        h = t("input_layernorm", f.rms_norm, x, (hidden,), w["ln1"], 1e-5)
        qkv = t("attn_pre_proj", f.linear, h, w["qkv"])
        q, k, _ = qkv.split([s["q"], s["kv"], s["kv"]], dim=-1)
        t("attn_rope", rope, q, k)
        residual = x + t("attn_post_proj", f.linear, attn_out, w["o"])
        h = t("post_attention_layernorm", f.rms_norm, residual, (hidden,), w["ln2"], 1e-5)
        up = t("mlp_up_proj", f.linear, h, w["up"])
        down = t("mlp_down_proj", f.linear, t("mlp_act", act, up), w["down"])
        return t("add", torch.add, residual, down)

    return step


def _attention_step(
    torch: Any,
    model: ModelSpec,
    tp: int,
    batch: int,
    q_len: int,
    context: int,
    dtype: Any,
    device: str,
    gen: Any,
) -> Callable[[_Timer], Any]:
    """SDPA: ``batch`` sequences of ``q_len`` queries against ``context`` keys (causal when prefilling)."""
    s = _shard(model, tp)

    def randn(heads: int, length: int) -> Any:
        shape = (batch, heads, length, model.head_dim)
        return torch.empty(shape, dtype=dtype, device=device).normal_(generator=gen)

    q, k, v = randn(s["heads"], q_len), randn(s["kv_heads"], context), randn(s["kv_heads"], context)
    sdpa, gqa = torch.nn.functional.scaled_dot_product_attention, s["heads"] != s["kv_heads"]
    return lambda t: t("attention", lambda: sdpa(q, k, v, is_causal=q_len > 1, enable_gqa=gqa))


# -- driver ------------------------------------------------------------------------------------------------
def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    names = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.M) if cpuinfo.exists() else []
    return names[0].strip() if names else platform.processor() or platform.machine() or "cpu"


def _device(torch: Any, settings: ProfileSettings) -> tuple[str, str, Any]:
    cuda = torch.cuda.is_available()
    if settings.device == "cuda" and not cuda:
        raise ConfigError(
            "--device cuda but PyTorch sees no CUDA GPU (torch.cuda.is_available() is False); "
            "install a CUDA build of torch or use --device cpu"
        )
    device = "cuda" if settings.device == "cuda" or (settings.device == "auto" and cuda) else "cpu"
    name = torch.cuda.get_device_name() if device == "cuda" else _cpu_name()
    dtype_name = _DTYPES.get(settings.dtype, "bfloat16" if device == "cuda" else "float32")
    return device, name, getattr(torch, dtype_name)


@contextmanager
def _threads(torch: Any, threads: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run(model: ModelSpec, settings: ProfileSettings, progress: Progress | None = None) -> ProfileResult:
    """Measure every (TP, num_tokens) point, and attention when asked; ``progress`` hears of each point."""
    for tp in settings.tp_degrees:
        _shard(model, tp)  # validate every degree before spending any time
    torch = _torch()
    device, device_name, dtype = _device(torch, settings)
    cuda = device == "cuda"
    repeats = settings.repeats or (20 if cuda else 5)
    warmup = settings.warmup if settings.warmup is not None else (2 if cuda else 1)
    timer, gen = _Timer(torch, cuda), torch.Generator(device=device).manual_seed(settings.seed)
    started = time.perf_counter()
    max_seconds = settings.max_seconds if settings.max_seconds is not None else (0.0 if cuda else 45.0)
    deadline = started + max_seconds if max_seconds else None
    ops_budget, attn_budget = _Budget(deadline), _Budget(deadline)
    shape = {
        "n_head": model.num_heads,
        "n_kv_head": model.num_kv_heads,
        "n_embd": model.hidden_size,
        "n_expanded_embd": model.intermediate_size,
        "vocab_size": model.vocab_size,
        "use_gated_mlp": model.gated_mlp,
    }
    rows: list[dict[str, Any]] = []
    attn_rows: list[dict[str, Any]] = []
    skipped: list[str] = []

    def point(
        label: str, budget: _Budget, flops: float, build: Callable[[], Callable[[_Timer], Any]]
    ) -> dict[str, float] | None:
        if not budget.fits(flops):
            skipped.append(label)
            if progress:
                progress(f"skipped {label}")
            return None
        t0 = time.perf_counter()
        stats = _measure(build(), timer, warmup, repeats)
        budget.record(flops, time.perf_counter() - t0)
        if progress:
            progress(label)
        return stats

    threads = settings.cpu_threads if settings.cpu_threads and not cuda else torch.get_num_threads()
    with torch.inference_mode(), _threads(torch, threads):
        for tp in settings.tp_degrees:
            weights = _layer_weights(torch, model, tp, dtype, device, gen)
            for tokens in sorted(settings.num_tokens):
                stats = point(
                    f"tp={tp} tokens={tokens}",
                    ops_budget,
                    _layer_flops(model, tokens, tp),
                    lambda tp=tp, n=tokens, w=weights: _layer_step(torch, model, tp, n, w, gen),
                )
                if stats is not None:
                    rows.append({**stats, **shape, "num_tokens": tokens, "num_tensor_parallel_workers": tp})
            del weights
        if settings.attention:
            for tp in settings.tp_degrees:
                s = _shard(model, tp)
                cases = [("prefill", 1, c, c) for c in sorted(settings.prefill_context_tokens)]
                cases += [("decode", b, 1, c) for b, c in sorted(settings.decode_points)]
                for phase, batch, q_len, context in cases:
                    flops = 4.0 * batch * s["heads"] * q_len * context * model.head_dim
                    stats = point(
                        f"tp={tp} {phase} batch={batch} context={context}",
                        attn_budget,
                        flops,
                        lambda tp=tp, b=batch, q=q_len, c=context: _attention_step(
                            torch, model, tp, b, q, c, dtype, device, gen
                        ),
                    )
                    if stats is not None:
                        attn_rows.append(
                            {
                                **stats,
                                "phase": phase,
                                "batch_size": batch,
                                "context_tokens": context,
                                "num_tokens": batch * q_len,
                                "n_head": model.num_heads,
                                "n_kv_head": model.num_kv_heads,
                                "head_dim": model.head_dim,
                                "num_tensor_parallel_workers": tp,
                            }
                        )
    ops = pd.DataFrame(rows, columns=list(PROFILE_COLUMNS))
    attention = pd.DataFrame(attn_rows, columns=list(ATTENTION_COLUMNS)) if settings.attention else None
    dtype_name = str(dtype).removeprefix("torch.")
    return ProfileResult(
        model=model.hf_id.split("/")[-1] or model.name,
        device=device_name,
        dtype=dtype_name,
        timer="cuda-events" if cuda else "perf_counter",
        repeats=repeats,
        warmup=warmup,
        torch_version=str(torch.__version__),
        ops=ops,
        attention=attention,
        skipped=tuple(skipped),
        elapsed_s=time.perf_counter() - started,
        meta={"settings": asdict(settings), "model_spec": asdict(model), "cpu_threads": threads},
    )


def device_tag(result: ProfileResult) -> str:
    """Folder name for the measuring device: the GPU family the calibration keys on (``h100``, ``a100``,
    as in ``../shared/data/profiles``) when the CUDA name shows one, else a slug of it; ``cpu`` on the CPU."""
    if result.timer == "perf_counter":
        return "cpu"
    family = re.search(r"\b(h200|h100|a100|l40s|a10g|l4)\b", result.device.lower())
    return family[1] if family else re.sub(r"[^a-z0-9]+", "-", result.device.lower()).strip("-")


def write_profile(result: ProfileResult, output: Path) -> list[Path]:
    """Write ``<model>.mlp.csv`` (Vidur's format), ``<model>.attention.csv`` when measured and
    ``<model>.profile.json`` (device, dtype, timer, repeats, skipped points) into the folder ``output``;
    an ``output`` ending in ``.csv`` names the ops file itself and the others go beside it."""
    if output.suffix == ".csv":
        folder, stem = output.parent, output.name.removesuffix(".csv").removesuffix(".mlp")
    else:
        folder, stem = output, result.model
    folder.mkdir(parents=True, exist_ok=True)
    ops_path = output if output.suffix == ".csv" else folder / f"{stem}.mlp.csv"
    result.ops.to_csv(ops_path, index=False)
    written = [ops_path]
    if result.attention is not None:
        written.append(folder / f"{stem}.attention.csv")
        result.attention.to_csv(written[-1], index=False)
    meta = {
        "model": result.model,
        "device": result.device,
        "dtype": result.dtype,
        "timer": result.timer,
        "repeats": result.repeats,
        "warmup": result.warmup,
        "torch": result.torch_version,
        "elapsed_s": round(result.elapsed_s, 3),
        "skipped": list(result.skipped),
        **result.meta,
    }
    written.append(folder / f"{stem}.profile.json")
    written[-1].write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return written

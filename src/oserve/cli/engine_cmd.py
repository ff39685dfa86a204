"""``oserve engine``: run one emulated replica (the simulator's engine model on the wall clock) as an HTTP server
speaking ``vllm serve``'s API. The local orchestrator launches it as a subprocess; SIGTERM drains and exits."""

from __future__ import annotations

import os
import sys

import typer

from oserve.errors import ConfigError
from oserve.spec import ReplicaConfig, get_gpu, get_model

SERVE_EXTRA_HINT = "needs the serve extra: pip install 'oserve[serve]'"


def engine(
    model: str = typer.Option(..., "--model", help="Catalogue model name or a config.json path."),
    gpu: str = typer.Option("H100", "--gpu", help="GPU type of the replica (see `oserve spec gpus`)."),
    tp: int = typer.Option(1, "--tp", "--tensor-parallel-size", help="Tensor-parallel degree."),
    pp: int = typer.Option(1, "--pp", "--pipeline-parallel-size", help="Pipeline-parallel degree."),
    port: int = typer.Option(8000, "--port", help="TCP port to listen on."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind."),
    speed: float = typer.Option(1.0, "--speed", help="Run the cost model's clock this many times faster."),
    served_model_name: str = typer.Option(
        "", "--served-model-name", help="Model name clients send (default: --model as given)."
    ),
    max_num_seqs: int = typer.Option(256, "--max-num-seqs", help="Most sequences running at once."),
    max_num_batched_tokens: int = typer.Option(
        8192, "--max-num-batched-tokens", help="Token budget of one iteration (chunked prefill)."
    ),
    max_model_len: int = typer.Option(
        0, "--max-model-len", help="Context length (0: the model's, capped at 32k)."
    ),
    gpu_memory_utilization: float = typer.Option(
        0.9, "--gpu-memory-utilization", help="Fraction of each GPU's memory for weights, activations and KV."
    ),
    block_size: int = typer.Option(16, "--block-size", help="Tokens per KV-cache block."),
    enable_prefix_caching: bool = typer.Option(
        True, "--enable-prefix-caching/--no-enable-prefix-caching", help="vLLM's automatic prefix caching."
    ),
    role: str = typer.Option(
        "aggregated",
        "--role",
        help="Disaggregation role: aggregated, prefill or decode (any role serves a plain request whole).",
    ),
    default_max_tokens: int = typer.Option(
        256, "--default-max-tokens", help="Output tokens of a request that gives no max_tokens."
    ),
    tick_ms: float = typer.Option(
        2.0,
        "--tick-ms",
        help="Decode steps ending within this many wall ms are run and sent together (0: each alone).",
    ),
) -> None:
    """Run an emulated engine replica: vLLM's HTTP API, tokens paced by the cost model (/v1/* needs the key in
    $OSERVE_ENGINE_API_KEY as a bearer token when it is set)."""
    try:
        from oserve.runtime import run_async
        from oserve.runtime.auth import ENGINE_KEY_ENV
        from oserve.runtime.engine.emulated import make_engine_app, serve_engine
    except ImportError as exc:
        raise ConfigError(f"oserve engine {SERVE_EXTRA_HINT} ({exc.name} is missing)") from exc
    if not 0 < port < 65536:
        raise ConfigError(f"--port must be in 1..65535, got {port}")
    if default_max_tokens < 1:
        raise ConfigError(f"--default-max-tokens must be >= 1, got {default_max_tokens}")
    spec = get_model(model)
    config = ReplicaConfig(
        get_gpu(gpu),
        tp=tp,
        pp=pp,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens,
        block_size=block_size,
        gpu_memory_utilization=gpu_memory_utilization,
        max_model_len=max_model_len or None,
        enable_prefix_caching=enable_prefix_caching,
        role=role,  # type: ignore[arg-type]  # ReplicaConfig checks it
    )
    name = served_model_name or model
    # the gateway's per-serve secret arrives in the environment, never on argv (where `ps` would show it)
    api_key = os.environ.get(ENGINE_KEY_ENV) or None
    app = make_engine_app(
        spec,
        config,
        served_model_name=name,
        speed=speed,
        default_max_tokens=default_max_tokens,
        tick_s=tick_ms / 1e3,
        api_key=api_key,
    )

    def ready() -> None:
        print(
            f"oserve engine: {name} on {config.label} at http://{host}:{port} (speed {speed:g})",
            file=sys.stderr,
        )

    try:
        run_async(serve_engine(app, host, port, ready=ready))
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc

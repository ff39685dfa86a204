"""How a replica's engine process is launched: the command and environment per backend, by the name users type.

``emulated`` runs ``oserve engine`` (the cost-model-paced engine in this project) and ``vllm`` runs ``vllm serve``
(``oserve.runtime.engine.vllm``). Orchestrators only call ``backend.launch(replica, ...)`` and run what it says;
both engines answer the same HTTP contract (/health, /metrics, the OpenAI routes).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from oserve.errors import ConfigError
from oserve.runtime.auth import ENGINE_KEY_ENV
from oserve.spec import Replica

__all__ = ["BACKENDS", "EmulatedBackend", "EngineBackend", "EngineLaunch", "make_backend"]


@dataclass(frozen=True, slots=True)
class EngineLaunch:
    """One engine process: its argv and the environment variables set on top of the parent's."""

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """The command line as a shell would show it; secrets in the environment masked (it goes to logs)."""
        prefix = " ".join(f"{k}={'***' if _secret(k) else v}" for k, v in sorted(self.env.items()))
        return (prefix + " " if prefix else "") + " ".join(self.argv)


def _secret(name: str) -> bool:
    return any(word in name.upper() for word in ("KEY", "TOKEN", "SECRET", "PASSWORD"))


class EngineBackend(Protocol):
    """Builds the launch of one replica's engine; the orchestrator picks the port and the devices."""

    #: the registry name users type (``--backend emulated``)
    name: str
    #: how long an engine may take to answer /health after launch, seconds
    startup_timeout_s: float

    def launch(self, replica: Replica, *, port: int, host: str, device_ids: Sequence[int]) -> EngineLaunch:
        """The command for ``replica`` listening on ``host:port``, pinned to ``device_ids`` (local GPU indices)."""
        ...


@dataclass(frozen=True, slots=True)
class EmulatedBackend:
    """``oserve engine``: the emulated engine paced by the cost model for the replica's shape; no GPU needed.

    ``speed`` runs the emulated clock faster than real time (tests use 20-100x).
    """

    model: str
    served_model_name: str = ""
    speed: float = 1.0
    python: str = sys.executable
    startup_timeout_s: float = 60.0
    api_key: str = ""  # the secret /v1/* requires (the gateway's); passed in the environment
    name: str = "emulated"

    def __post_init__(self) -> None:
        if not self.speed > 0:
            raise ConfigError(f"emulated engine speed must be > 0, got {self.speed}")

    def launch(self, replica: Replica, *, port: int, host: str, device_ids: Sequence[int]) -> EngineLaunch:
        c = replica.config
        argv = [self.python, "-m", "oserve.cli.main", "engine", "--model", self.model, "--gpu", c.gpu.name]
        argv += ["--tp", str(c.tp), "--pp", str(c.pp), "--port", str(port), "--host", host]
        argv += ["--speed", f"{self.speed:g}", "--served-model-name", self.served_model_name or self.model]
        argv += ["--max-num-seqs", str(c.max_num_seqs)]
        argv += ["--max-num-batched-tokens", str(c.max_num_batched_tokens)]
        argv += [
            "--block-size",
            str(c.block_size),
            "--gpu-memory-utilization",
            f"{c.gpu_memory_utilization:g}",
        ]
        if c.max_model_len is not None:
            argv += ["--max-model-len", str(c.max_model_len)]
        if not c.enable_prefix_caching:  # vLLM v1 caches prefixes unless told not to
            argv += ["--no-enable-prefix-caching"]
        if c.role != "aggregated":
            argv += ["--role", c.role]
        return EngineLaunch(tuple(argv), {ENGINE_KEY_ENV: self.api_key} if self.api_key else {})


def _vllm(**kwargs: Any) -> EngineBackend:
    from oserve.runtime.engine.vllm import VllmBackend

    return VllmBackend(**kwargs)


BACKENDS: dict[str, Callable[..., EngineBackend]] = {"emulated": EmulatedBackend, "vllm": _vllm}


def make_backend(name: str, **params: Any) -> EngineBackend:
    """A backend by its registered name (``make_backend("vllm", model="meta-llama/Meta-Llama-3-8B")``)."""
    try:
        factory = BACKENDS[name]
    except KeyError:
        raise ConfigError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}") from None
    try:
        return factory(**params)
    except TypeError as exc:
        raise ConfigError(f"backend {name!r}: {exc}") from exc

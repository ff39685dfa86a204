"""``oserve serve``'s configuration file (YAML, validated with pydantic), every field with its default.

Command-line options override the file; the file overrides the defaults. docs/serve.md shows a full example.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from oserve.errors import ConfigError
from oserve.files import read_structured

__all__ = [
    "BackendSection",
    "ControllerSection",
    "GatewaySection",
    "OrchestratorSection",
    "ServeConfig",
    "load_serve_config",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BackendSection(_Section):
    name: Literal["emulated", "vllm"] = Field("emulated", description="engine behind each replica")
    speed: float = Field(1.0, gt=0, description="emulated: run the cost model's clock this many times faster")
    vllm_model: str | None = Field(
        None, description="vllm: what it loads (HF id or path); default the model's HF id"
    )
    vllm_executable: str = Field("vllm", description="vllm: the CLI to run")
    extra_args: list[str] = Field(default_factory=list, description="vllm: flags appended to `vllm serve`")
    startup_timeout_s: float | None = Field(
        None, gt=0, description="/health wait; default 60 s emulated, 1200 s vllm"
    )


class OrchestratorSection(_Section):
    name: Literal["local", "ray"] = "local"
    ray_address: str | None = Field(
        None, description="ray: cluster to join (`auto` after `ray start`); none: local"
    )
    log_dir: str = Field("oserve-logs", description="one log file per engine launch")
    engine_host: str = Field("127.0.0.1", description="address engines bind (0.0.0.0 across machines)")
    drain_timeout_s: float = Field(60.0, ge=0, description="longest wait for a stopping replica's requests")
    stop_grace_s: float = Field(30.0, ge=0, description="SIGTERM to SIGKILL")
    min_serving_fraction: float = Field(0.5, ge=0, le=1, description="GPUs kept serving during a switch wave")


class GatewaySection(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535, description="0: any free port")
    api_key: str | None = Field(
        None, min_length=1, description="bearer key /v1/* requires (none: open); env OSERVE_API_KEY"
    )
    admin_token: str | None = Field(
        None, min_length=1, description="bearer token /admin/* requires; env OSERVE_ADMIN_TOKEN"
    )
    insecure_admin: bool = Field(False, description="serve /admin/* without a token (trusted loopback only)")
    shutdown_grace_s: float = Field(60.0, ge=0, description="SIGTERM: longest wait for requests in flight")
    backlog: int = Field(
        4096, ge=1, le=1 << 16, description="listen queue (aiohttp's default, 128, overflows)"
    )
    max_body_bytes: int = Field(4 << 20, ge=1024, le=1 << 30, description="larger /v1 bodies get 413")
    max_admin_body_bytes: int = Field(
        1 << 20, ge=1024, le=64 << 20, description="larger admin bodies get 413"
    )
    max_inflight: int = Field(16384, ge=1, description="requests held at once; beyond: 429")
    max_inflight_per_replica: int = Field(256, ge=1, description="a replica this full takes no more")
    body_timeout_s: float = Field(30.0, gt=0, description="longest a client may take to send its body")
    keepalive_timeout_s: float = Field(75.0, gt=0, description="idle keep-alive connections close after this")
    hold_timeout_s: float = Field(
        30.0, ge=0, description="longest a request waits while no replica is routed"
    )
    max_held: int = Field(4096, ge=0, description="requests held at once while no replica is routed")
    max_queued: int = Field(
        4096, ge=0, description="requests waiting at once for a slot while every replica is full; beyond: 429"
    )
    queue_timeout_s: float = Field(
        30.0, ge=0, description="longest a request waits for a slot; then 429 (0: refuse at once)"
    )
    gc_gen0_threshold: int = Field(
        200000, ge=0, description="young GC every this many allocations, start-up frozen (0: Python's GC)"
    )
    probe_interval_s: float = Field(1.0, gt=0, description="replica /health probe period")
    probe_timeout_s: float = Field(2.0, gt=0, description="a replica that misses its probe this long is hung")
    read_timeout_s: float = Field(600.0, gt=0, description="longest silence from a replica mid-request")


class ControllerSection(_Section):
    enabled: bool = Field(
        True, description="re-plan and switch as load shifts (health restore runs regardless)"
    )
    window_s: float = Field(10.0, gt=0)
    history_windows: int = Field(30, ge=1)
    min_history_windows: int = Field(3, ge=1)
    horizon_windows: int = Field(6, ge=1)
    forecaster: str = "ewma"
    min_gain: float = Field(
        0.10, ge=0, description="hysteresis: switch only when the plan sustains this much more load"
    )
    min_interval_s: float = Field(60.0, ge=0, description="at most one switch per interval")
    restart_s: float | None = Field(
        None, ge=0, description="engine start the switch is priced at; default: 30 (vllm) or 1 (emulated)"
    )
    verify_s: float = Field(
        60.0,
        ge=0,
        description="replay a switch in the simulator on this much recent traffic first (0: never)",
    )
    verify_margin: float = Field(
        0.01,
        ge=0,
        le=1,
        description="the replay must show the switch meeting the SLO for this share more of its requests; a "
        "loss beyond it on the traffic as it came vetoes the switch",
    )
    health_interval_s: float = Field(1.0, gt=0)
    clock: Literal["wall", "engine"] = Field(
        "wall",
        description="engine: with the emulated backend, the controller and the gateway's ledger run on the "
        "engines' clock (backend.speed x wall): windows, rates and replays in emulated seconds, so a sped-up run "
        "decides as the same traffic at its own pace would",
    )
    tps: list[int] = Field(default_factory=lambda: [1, 2, 4, 8])
    pps: list[int] = Field(default_factory=lambda: [1])


class ServeConfig(_Section):
    model: str = Field("llama-3-8b", description="catalogue name or config.json path")
    cluster: str | dict[str, Any] = Field(
        "1x4xH100", description="compact spelling, YAML path, or the mapping"
    )
    deployment: str | None = Field(None, description="a deployment file; none: plan one for `rates`")
    rates: str = Field("512:128=4,2048:512=1", description="PROMPT:OUTPUT=RPS the first plan provisions for")
    slo: str = Field(
        "auto",
        description="ttft=S,tpot=S[,e2e=S] or auto; per class: 'ttft=2,tpot=0.1;batch:prompt>=16000:e2e=600'",
    )
    prompt_edges: list[int] | None = Field(
        None, description="type edges over prompt tokens (default: the rates')"
    )
    output_edges: list[int] | None = Field(
        None, description="type edges over output tokens (default: the rates')"
    )
    backend: BackendSection = Field(default_factory=BackendSection)
    orchestrator: OrchestratorSection = Field(default_factory=OrchestratorSection)
    gateway: GatewaySection = Field(default_factory=GatewaySection)
    controller: ControllerSection = Field(default_factory=ControllerSection)

    def merged(self, overrides: dict[str, Any]) -> ServeConfig:
        """This config with dotted-key overrides (``{"gateway.port": 9000}``); None values are skipped."""
        data = self.model_dump()
        for key, value in overrides.items():
            if value is None:
                continue
            *path, last = key.split(".")
            node = data
            for part in path:
                node = node[part]
            node[last] = value
        return _validate(data, "options")


def _validate(data: Any, source: str) -> ServeConfig:
    try:
        return ServeConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{source}: invalid serve config: {problems}") from exc


def load_serve_config(path: Path | str | None) -> ServeConfig:
    """The file's config (defaults where it is silent), or the defaults without a file."""
    if path is None:
        return ServeConfig()
    data = read_structured(path, what="serve config", error=ConfigError) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of serve settings")
    return _validate(data, str(path))

"""The vLLM engine adapter: launch ``vllm serve`` for a replica, wait for /health, read /metrics, drain.

The launch is vLLM's own CLI (``vllm serve MODEL --tensor-parallel-size T --pipeline-parallel-size P --port N``)
with the replica's engine knobs under vLLM's names, pinned with ``CUDA_VISIBLE_DEVICES`` (vLLM takes ranks in that
order, which the switch planner's GPU order relies on). Health and load come from vLLM's endpoints: ``GET /health``
answers 200 once the engine serves, and ``/metrics`` carries ``vllm:num_requests_running``,
``vllm:num_requests_waiting`` and the KV-cache usage (``vllm:kv_cache_usage_perc`` since v0.10, earlier
``vllm:gpu_cache_usage_perc``). The emulated engine answers the same contract, so the probes here serve both.

A replica of a P/D pool (role ``prefill`` or ``decode``) gets ``--kv-transfer-config
'{"kv_connector":"NixlConnector","kv_role":"kv_both"}'`` (vLLM's disaggregated serving over NIXL: both sides
``kv_both``, the request's ``kv_transfer_params`` say which half it is) and its own NIXL side-channel port,
``VLLM_NIXL_SIDE_CHANNEL_PORT`` = the HTTP port + ``nixl_port_offset`` (engines sharing a host need distinct
ones). The gateway speaks the two-phase protocol of vLLM's proxy (``runtime.engine.kv_handoff``).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import aiohttp

from oserve.errors import BackendError, ConfigError
from oserve.runtime.engine.launch import EngineLaunch
from oserve.spec import Replica

__all__ = [
    "EngineLoad",
    "VllmBackend",
    "parse_vllm_metrics",
    "read_load",
    "wait_healthy",
    "wait_idle",
]

RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_USAGE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
#: what a P/D pool replica is launched with (``--kv-transfer-config``)
KV_TRANSFER_CONFIG = '{"kv_connector":"NixlConnector","kv_role":"kv_both"}'


@dataclass(frozen=True, slots=True)
class VllmBackend:
    """``vllm serve``: ``model`` is what vLLM loads (HF id or local path); clients ask for ``served_model_name``.

    ``extra_args`` go after the generated flags (e.g. ``("--enable-sleep-mode",)``).
    """

    model: str
    served_model_name: str = ""
    extra_args: tuple[str, ...] = ()
    executable: str = "vllm"
    # Loading weights, profiling memory and capturing CUDA graphs: 30-100+ s for a cold start, more for 70B.
    startup_timeout_s: float = 1200.0
    api_key: str = ""  # vLLM's --api-key for /v1/*, passed as VLLM_API_KEY (argv would show it in `ps`)
    name: str = "vllm"
    nixl_port_offset: int = 10000  # a pool replica's NIXL side channel: its HTTP port + this

    def __post_init__(self) -> None:
        if not self.model:
            raise ConfigError("the vllm backend needs a model (Hugging Face id or local path)")

    def launch(self, replica: Replica, *, port: int, host: str, device_ids: Sequence[int]) -> EngineLaunch:
        c = replica.config
        if len(device_ids) != c.num_gpus:
            raise ConfigError(
                f"replica {replica.name} ({c.label}) needs {c.num_gpus} GPUs, got devices {list(device_ids)}"
            )
        argv = [self.executable, "serve", self.model]
        argv += ["--tensor-parallel-size", str(c.tp), "--pipeline-parallel-size", str(c.pp)]
        argv += ["--port", str(port), "--host", host]
        argv += ["--served-model-name", self.served_model_name or self.model]
        argv += [
            "--max-num-seqs",
            str(c.max_num_seqs),
            "--max-num-batched-tokens",
            str(c.max_num_batched_tokens),
        ]
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
        if c.role != "aggregated":  # a P/D pool replica: NIXL moves the prompt's KV between the pair
            argv += ["--kv-transfer-config", KV_TRANSFER_CONFIG]
        argv += list(self.extra_args)
        env = {"CUDA_VISIBLE_DEVICES": ",".join(str(d) for d in device_ids)}
        if self.api_key:
            env["VLLM_API_KEY"] = self.api_key
        if c.role != "aggregated":
            env["VLLM_NIXL_SIDE_CHANNEL_PORT"] = str(port + self.nixl_port_offset)
        return EngineLaunch(tuple(argv), env)


@dataclass(frozen=True, slots=True)
class EngineLoad:
    """What an engine reports on /metrics: requests running and waiting, KV-cache usage (0-1, None if absent)."""

    running: int
    waiting: int
    kv_usage: float | None

    @property
    def busy(self) -> bool:
        return self.running + self.waiting > 0


def parse_vllm_metrics(text: str) -> EngineLoad:
    """Sum vLLM's gauges over their label sets (one per served model) from Prometheus text."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_part, _, value = line.rpartition(" ")
        name = name_part.split("{", 1)[0].strip()
        if name in (RUNNING, WAITING, *KV_USAGE):
            try:
                values[name] = values.get(name, 0.0) + float(value)
            except ValueError:
                continue
    if RUNNING not in values or WAITING not in values:
        raise BackendError(f"engine /metrics lacks {RUNNING} or {WAITING}")
    kv = next((values[k] for k in KV_USAGE if k in values), None)
    return EngineLoad(int(values[RUNNING]), int(values[WAITING]), kv)


async def read_load(session: aiohttp.ClientSession, url: str, *, timeout_s: float = 5.0) -> EngineLoad:
    """GET ``url``/metrics and parse it; a failed request is a ``BackendError``."""
    try:
        async with session.get(f"{url}/metrics", timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            if resp.status != 200:
                raise BackendError(f"{url}/metrics answered HTTP {resp.status}")
            return parse_vllm_metrics(await resp.text())
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise BackendError(f"cannot read {url}/metrics: {exc!r}") from exc


async def wait_healthy(
    url: str,
    *,
    timeout_s: float,
    alive: Callable[[], bool | Awaitable[bool]] = lambda: True,
    describe: Callable[[], str] = lambda: "",
    poll_s: float = 0.1,
) -> float:
    """Poll ``url``/health until it answers 200; returns the seconds waited. Raises ``BackendError`` when
    ``alive()`` (plain or async) turns false (the process exited) or after ``timeout_s``; ``describe()`` adds
    context (a log tail)."""
    start = time.monotonic()
    async with aiohttp.ClientSession() as session:
        while True:
            ok = alive()
            if inspect.isawaitable(ok):
                ok = await ok
            if not ok:
                raise BackendError(f"engine at {url} exited before it was healthy{_context(describe)}")
            try:
                async with session.get(f"{url}/health", timeout=aiohttp.ClientTimeout(total=2.0)) as resp:
                    if resp.status == 200:
                        return time.monotonic() - start
            except (aiohttp.ClientError, TimeoutError):
                pass
            if time.monotonic() - start > timeout_s:
                raise BackendError(f"engine at {url} not healthy after {timeout_s:g} s{_context(describe)}")
            await asyncio.sleep(poll_s)


async def wait_idle(url: str, *, timeout_s: float, poll_s: float = 0.05) -> bool:
    """Drain: wait until the engine reports nothing running or waiting; False after ``timeout_s`` (or when its
    /metrics cannot be read, e.g. it already exited)."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                load = await read_load(session, url, timeout_s=min(2.0, timeout_s))
            except BackendError:
                return False
            if not load.busy:
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(poll_s)


def _context(describe: Callable[[], str]) -> str:
    text = describe()
    return f": {text}" if text else ""

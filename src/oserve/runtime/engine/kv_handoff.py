"""The KV hand-off between a prefill replica and a decode replica, as the live runtime speaks it: vLLM's
``kv_transfer_params`` (the NixlConnector's request fields) and the emulated engine's price for the copy.

The protocol is vLLM's disaggregated proxy's (``examples/online_serving/disaggregated_serving``):

1. the gateway sends the prefill replica the request with ``max_tokens`` 1, no stream, and
   ``kv_transfer_params = {"do_remote_decode": true, "do_remote_prefill": false, ...}`` (``PREFILL_PARAMS``);
2. the prefill replica answers its one token with ``kv_transfer_params`` naming where the prompt's KV blocks
   wait (``do_remote_prefill`` true, ``remote_engine_id``, ``remote_block_ids``, ``remote_host``,
   ``remote_port``, ``tp_size``);
3. the gateway sends the decode replica the original request plus those ``kv_transfer_params``; the decode
   replica pulls the KV instead of prefilling and generates the whole answer.

The emulated decode engine charges the copy as ``sim.disagg`` prices it: ``latency + bytes / bandwidth``, bytes =
prompt tokens x the KV bytes per token per GPU at the smaller TP of the two, over ``min(tp)`` NVLink ports (the
GPU's NVLink bandwidth each; the calibration's point-to-point bandwidth on a GPU without NVLink), latency the
calibration's point-to-point alpha — ``sim.disagg.kv_link`` without a cluster.
"""

from __future__ import annotations

import json
from dataclasses import replace
from functools import lru_cache
from typing import Any

from oserve.perf.calibration import builtin_calibration
from oserve.perf.costmodel import CostModel
from oserve.sim.disagg import KvLink
from oserve.spec.model import ModelSpec
from oserve.spec.replica import ReplicaConfig

__all__ = [
    "PREFILL_PARAMS",
    "decode_body",
    "handoff_params",
    "handoff_s",
    "kv_transfer_params",
    "prefill_body",
    "remote_prefill",
]

#: what the gateway asks a prefill replica for (vLLM's toy proxy sends the same)
PREFILL_PARAMS: dict[str, Any] = {
    "do_remote_decode": True,
    "do_remote_prefill": False,
    "remote_engine_id": None,
    "remote_block_ids": None,
    "remote_host": None,
    "remote_port": None,
}


def kv_transfer_params(raw: bytes) -> dict[str, Any] | None:
    """The request body's ``kv_transfer_params`` (None when absent or not an object)."""
    if b"kv_transfer_params" not in raw:
        return None
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    params = body.get("kv_transfer_params") if isinstance(body, dict) else None
    return params if isinstance(params, dict) else None


def remote_prefill(params: dict[str, Any] | None) -> bool:
    """Whether a request's KV was computed elsewhere (the decode half of a hand-off)."""
    return bool(params and params.get("do_remote_prefill"))


def prefill_body(raw: bytes) -> bytes:
    """The prefill half of a request: one token, not streamed, asking for a remote decode."""
    body = json.loads(raw)
    body["max_tokens"] = 1
    if "max_completion_tokens" in body:
        body["max_completion_tokens"] = 1
    body["stream"] = False
    body.pop("stream_options", None)
    body["kv_transfer_params"] = dict(PREFILL_PARAMS)
    return json.dumps(body, separators=(",", ":")).encode()


def decode_body(raw: bytes, params: dict[str, Any] | None) -> bytes:
    """The decode half: the original request with the prefill's ``kv_transfer_params``."""
    body = json.loads(raw)
    body["kv_transfer_params"] = params or {}
    return json.dumps(body, separators=(",", ":")).encode()


def handoff_params(engine_id: str, host: str, port: int, tp: int, blocks: int) -> dict[str, Any]:
    """What a prefill replica answers: where the request's KV blocks wait (vLLM's NixlConnector fields)."""
    return {
        "do_remote_prefill": True,
        "do_remote_decode": False,
        "remote_engine_id": engine_id,
        "remote_block_ids": list(range(blocks)),
        "remote_host": host,
        "remote_port": port,
        "tp_size": tp,
    }


@lru_cache(maxsize=64)
def _bytes_per_token(model: ModelSpec, config: ReplicaConfig, tp: int) -> int:
    return CostModel(model, replace(config, tp=tp, pp=1, role="aggregated")).memory.kv_bytes_per_token


def handoff_link(config: ReplicaConfig, remote_tp: int) -> KvLink:
    """The NVLink path between a replica of ``remote_tp`` GPUs and this one (``min(tp)`` ports)."""
    calib = builtin_calibration().for_gpu(config.gpu)
    alpha, p2p_gb_per_s = calib.p2p_intra
    per_port = config.gpu.nvlink_gb_per_s if config.gpu.nvlink_gb_per_s > 0 else p2p_gb_per_s
    return KvLink("nvlink", min(config.tp, remote_tp) * per_port, alpha)


def handoff_s(model: ModelSpec, config: ReplicaConfig, prompt_tokens: int, remote_tp: int) -> float:
    """Virtual seconds the prompt's KV takes from a prefill replica of ``remote_tp`` GPUs to this one."""
    tp = max(1, min(config.tp, remote_tp))
    nbytes = prompt_tokens * _bytes_per_token(model, config, tp)
    return handoff_link(config, remote_tp).transfer_s(nbytes)

"""The vLLM adapter: exact launch commands, /metrics parsing, and a real launch through a ``vllm`` stand-in on PATH
that execs the emulated engine (same HTTP contract) after recording what it was called with."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
from pathlib import Path

import aiohttp
import pytest

from oserve.errors import BackendError, ConfigError
from oserve.runtime.engine.launch import EmulatedBackend, make_backend
from oserve.runtime.engine.vllm import VllmBackend, parse_vllm_metrics, read_load, wait_idle
from oserve.runtime.orchestrator import LocalOrchestrator
from oserve.spec import Deployment, Replica, ReplicaConfig, get_gpu, get_model, parse_cluster

H100 = get_gpu("H100")
HF_ID = "meta-llama/Meta-Llama-3-8B"


def test_launch_command_is_vllm_serve_pinned_to_the_replica_gpus():
    backend = VllmBackend(HF_ID, served_model_name="llama-3-8b", extra_args=("--enable-sleep-mode",))
    replica = Replica(
        ReplicaConfig(H100, tp=2, pp=2, max_num_seqs=128, max_model_len=8192), (6, 7, 4, 5), "r1"
    )
    launch = backend.launch(replica, port=8123, host="127.0.0.1", device_ids=[6, 7, 4, 5])
    assert launch.argv == (
        "vllm", "serve", HF_ID,
        "--tensor-parallel-size", "2", "--pipeline-parallel-size", "2",
        "--port", "8123", "--host", "127.0.0.1",
        "--served-model-name", "llama-3-8b",
        "--max-num-seqs", "128", "--max-num-batched-tokens", "8192",
        "--block-size", "16", "--gpu-memory-utilization", "0.9",
        "--max-model-len", "8192",
        "--enable-sleep-mode",
    )  # fmt: skip
    # ranks follow CUDA_VISIBLE_DEVICES order, the order the switch planner chose
    assert launch.env == {"CUDA_VISIBLE_DEVICES": "6,7,4,5"}
    with pytest.raises(ConfigError, match="needs 4 GPUs"):
        backend.launch(replica, port=1, host="h", device_ids=[0])


def test_backend_registry():
    assert isinstance(make_backend("emulated", model="llama-3-8b"), EmulatedBackend)
    assert make_backend("vllm", model=HF_ID).name == "vllm"
    with pytest.raises(ConfigError, match="choose one of emulated, vllm"):
        make_backend("tgi", model="x")
    with pytest.raises(ConfigError, match="needs a model"):
        make_backend("vllm", model="")


VLLM_METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
vllm:num_requests_running{engine="1",model_name="m"} 2.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 7.0
vllm:num_requests_waiting{engine="1",model_name="m"} 0.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
vllm:time_to_first_token_seconds_bucket{le="0.001",model_name="m"} 0.0
"""


def test_metrics_sum_over_engines_and_accept_either_kv_name():
    load = parse_vllm_metrics(VLLM_METRICS)
    assert (load.running, load.waiting, load.kv_usage, load.busy) == (5, 7, 0.25, True)
    old = VLLM_METRICS.replace("kv_cache_usage_perc", "gpu_cache_usage_perc")
    assert parse_vllm_metrics(old).kv_usage == 0.25
    assert parse_vllm_metrics(VLLM_METRICS.split("# TYPE vllm:kv")[0]).kv_usage is None
    with pytest.raises(BackendError, match="lacks"):
        parse_vllm_metrics("process_cpu_seconds_total 1.0\n")


SHIM = """#!{python}
# A stand-in for vLLM's CLI: records how it was called, then runs the emulated engine with the same flags.
import json, os, sys
args = sys.argv[1:]
assert args[0] == "serve", args
flag = dict(zip(args[2::2], args[3::2]))
with open(os.environ["VLLM_SHIM_LOG"], "a") as log:
    log.write(json.dumps({{"argv": ["vllm", *args], "cuda": os.environ.get("CUDA_VISIBLE_DEVICES")}}) + "\\n")
os.execv(sys.executable, [
    sys.executable, "-m", "oserve.cli.main", "engine", "--model", args[1], "--gpu", "H100",
    "--tp", flag["--tensor-parallel-size"], "--pp", flag["--pipeline-parallel-size"],
    "--port", flag["--port"], "--host", flag["--host"], "--served-model-name", flag["--served-model-name"],
    "--max-num-seqs", flag["--max-num-seqs"], "--speed", "1",
])
"""


@pytest.fixture
def vllm_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``vllm`` executable first on PATH; returns the file it records its calls in."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "vllm"
    shim.write_text(SHIM.format(python=sys.executable))
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    record = tmp_path / "vllm-calls.jsonl"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("VLLM_SHIM_LOG", str(record))
    src = Path(__file__).resolve().parents[2] / "src"
    monkeypatch.setenv("PYTHONPATH", f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    return record


def test_local_orchestrator_launches_vllm_serve_and_drains_before_stop(vllm_on_path: Path, tmp_path: Path):
    backend = VllmBackend(HF_ID, served_model_name="llama-3-8b")
    cluster = parse_cluster("1x4xH100")
    orch = LocalOrchestrator(
        backend, model=get_model("llama-3-8b"), cluster=cluster, log_dir=tmp_path / "logs"
    )
    deployment = Deployment(
        "llama-3-8b",
        (
            Replica(ReplicaConfig(H100, tp=2), (3, 2), "wide"),
            Replica(ReplicaConfig(H100, tp=1, max_num_seqs=64), (0,), "narrow"),
        ),
    )

    async def scenario() -> None:
        try:
            await check()
        finally:
            await orch.shutdown()

    async def check() -> None:
        report = await orch.apply(deployment)
        assert set(report.started) == {"wide", "narrow"}
        urls = orch.endpoints()
        calls = [json.loads(line) for line in vllm_on_path.read_text().splitlines()]
        expected = {}
        for r in deployment.replicas:
            port = int(urls[r.name].rsplit(":", 1)[1])
            launch = backend.launch(r, port=port, host="127.0.0.1", device_ids=orch.device_ids(r))
            expected[launch.argv] = launch.env["CUDA_VISIBLE_DEVICES"]
        assert {tuple(c["argv"]): c["cuda"] for c in calls} == expected
        assert set(expected.values()) == {"3,2", "0"}
        async with aiohttp.ClientSession() as session:
            # a request of about 2 s at real speed (8B on TP2: ~6 ms per token)
            body = {"model": "llama-3-8b", "prompt": "hi " * 64, "max_tokens": 300}
            request = asyncio.create_task(session.post(f"{urls['wide']}/v1/completions", json=body))
            for _ in range(100):
                load = await read_load(session, urls["wide"])
                if load.busy:
                    break
                await asyncio.sleep(0.02)
            assert load.running + load.waiting == 1
            # drain: the engine is busy, so a short wait reports not idle; a long one waits the request out
            assert not await wait_idle(urls["wide"], timeout_s=0.0)
            assert await wait_idle(urls["wide"], timeout_s=30.0)
            resp = await request
            assert (await resp.json())["usage"]["completion_tokens"] == 300

    asyncio.run(scenario())


def test_emulated_launch_carries_the_replica_shape_and_engine_knobs():
    backend = EmulatedBackend("llama-3-8b", speed=20, python="python")
    replica = Replica(ReplicaConfig(H100, tp=4, max_num_seqs=64, max_model_len=4096), (0, 1, 2, 3), "r0")
    launch = backend.launch(replica, port=9000, host="127.0.0.1", device_ids=[0, 1, 2, 3])
    assert launch.argv == (
        "python", "-m", "oserve.cli.main", "engine", "--model", "llama-3-8b", "--gpu", "H100-SXM-80GB",
        "--tp", "4", "--pp", "1", "--port", "9000", "--host", "127.0.0.1",
        "--speed", "20", "--served-model-name", "llama-3-8b",
        "--max-num-seqs", "64", "--max-num-batched-tokens", "8192",
        "--block-size", "16", "--gpu-memory-utilization", "0.9", "--max-model-len", "4096",
    )  # fmt: skip
    assert launch.env == {}  # no GPUs to pin


@pytest.mark.parametrize("backend", [VllmBackend(HF_ID), EmulatedBackend("llama-3-8b")])
def test_prefix_caching_off_reaches_the_engine_command(backend):
    on = Replica(ReplicaConfig(H100), (0,), "r0")
    off = Replica(ReplicaConfig(H100, enable_prefix_caching=False), (0,), "r0")
    assert "--no-enable-prefix-caching" not in backend.launch(on, port=1, host="h", device_ids=[0]).argv
    assert backend.launch(off, port=1, host="h", device_ids=[0]).argv[-1] == "--no-enable-prefix-caching"


@pytest.mark.parametrize("role", ["prefill", "decode"])
def test_a_pool_replica_launches_with_nixl_kv_transfer(role):
    backend = VllmBackend(HF_ID, extra_args=("--enable-sleep-mode",))
    replica = Replica(ReplicaConfig(H100, tp=2, role=role), (2, 3), "p0")
    launch = backend.launch(replica, port=8200, host="127.0.0.1", device_ids=[2, 3])
    i = launch.argv.index("--kv-transfer-config")
    assert json.loads(launch.argv[i + 1]) == {"kv_connector": "NixlConnector", "kv_role": "kv_both"}
    assert launch.argv[-1] == "--enable-sleep-mode"  # the user's flags still come last
    # its own NIXL side channel, so engines on one host do not collide
    assert launch.env == {"CUDA_VISIBLE_DEVICES": "2,3", "VLLM_NIXL_SIDE_CHANNEL_PORT": "18200"}
    aggregated = Replica(ReplicaConfig(H100, tp=2), (2, 3), "a0")
    plain = backend.launch(aggregated, port=8200, host="127.0.0.1", device_ids=[2, 3])
    assert "--kv-transfer-config" not in plain.argv and "VLLM_NIXL_SIDE_CHANNEL_PORT" not in plain.env
    emulated = EmulatedBackend("llama-3-8b").launch(replica, port=1, host="h", device_ids=[0, 1]).argv
    assert emulated[-2:] == ("--role", role)

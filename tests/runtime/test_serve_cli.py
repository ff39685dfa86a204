"""The ``oserve serve`` and ``oserve deploy`` commands as users run them: a real process on loopback, a config
file, a manual switch, and SIGTERM finishing the request in flight before everything stops."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
import yaml

from oserve.cli.main import main
from oserve.errors import ConfigError
from oserve.runtime.config import ServeConfig, load_serve_config
from oserve.runtime.loadgen import LoadRequest, send
from oserve.spec import Deployment, Replica, ReplicaConfig, get_gpu


def test_config_file_defaults_and_errors(tmp_path: Path):
    path = tmp_path / "serve.yaml"
    path.write_text("model: llama-3-8b\ngateway: {port: 9001}\ncontroller: {window_s: 5}\n")
    config = load_serve_config(path)
    assert (config.gateway.port, config.controller.window_s, config.backend.name) == (9001, 5.0, "emulated")
    assert config.merged({"gateway.port": 7, "backend.name": None}).gateway.port == 7
    assert load_serve_config(None) == ServeConfig()
    path.write_text("gateway: {prot: 9001}\n")
    with pytest.raises(ConfigError, match=r"gateway\.prot: Extra inputs"):
        load_serve_config(path)
    path.write_text("backend: {name: tgi}\n")
    with pytest.raises(ConfigError, match=r"backend\.name"):
        load_serve_config(path)


def test_deploy_without_a_server_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    file = tmp_path / "d.yaml"
    Deployment("llama-3-8b", (Replica(ReplicaConfig(get_gpu("H100")), (0,), "r0"),)).save(file)
    assert main(["deploy", str(file), "--gateway", "http://127.0.0.1:9"]) == 1
    assert "cannot reach http://127.0.0.1:9" in capsys.readouterr().err


def _wait_for_url(proc: subprocess.Popen, log: Path, timeout_s: float = 90.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        match = re.search(r"OpenAI API at (http://\S+)/v1", log.read_text())
        if match:
            return match.group(1)
        assert proc.poll() is None, log.read_text()
        time.sleep(0.1)
    raise AssertionError(f"serve did not come up: {log.read_text()}")


def test_serve_command_deploy_and_graceful_sigterm(tmp_path: Path):
    config = tmp_path / "serve.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "cluster": "1x2xH100",
                "rates": "512:128=2",
                "backend": {"speed": 5},
                "orchestrator": {"log_dir": str(tmp_path / "logs")},
                "gateway": {"port": 0},
            }
        )
    )
    log = tmp_path / "serve.log"
    env = {**os.environ, "OSERVE_ADMIN_TOKEN": "t0ken"}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "oserve.cli.main", "serve", "--config", str(config), "--no-controller"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        url = _wait_for_url(proc, log)
        assert "2 x H100-SXM-80GB:tp1" in log.read_text()
        # manual switch with `oserve deploy`: two TP1 -> one TP2 (every GPU changes: a short gap)
        target = tmp_path / "tp2.yaml"
        Deployment("llama-3-8b", (Replica(ReplicaConfig(get_gpu("H100"), tp=2), (0, 1), "w"),)).save(target)
        deploy = subprocess.run(
            [sys.executable, "-m", "oserve.cli.main", "deploy", str(target), "--gateway", url],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert deploy.returncode == 0, deploy.stderr
        assert "started w; stopped r0, r1" in deploy.stdout

        async def in_flight_then_sigterm():
            async with aiohttp.ClientSession() as session:
                # ~1.5 s at 5x real time: still streaming when SIGTERM arrives
                request = LoadRequest(0.0, 32, 1500, stream=True)
                task = asyncio.create_task(send(session, url, "llama-3-8b", request, time.monotonic()))
                await asyncio.sleep(0.5)
                proc.send_signal(signal.SIGTERM)
                return await task

        outcome = asyncio.run(in_flight_then_sigterm())
        assert outcome.ok, outcome
        assert proc.wait(timeout=60) == 0
        assert "stopped" in log.read_text()
        engines = list((tmp_path / "logs").glob("*.log"))
        assert len(engines) == 3  # r0, r1, then w
        for engine_log in engines:  # every engine is gone: its port refuses connections
            port = int(re.search(r"--port (\d+)", engine_log.read_text()).group(1))
            assert not _accepts(port), f"an engine still listens on port {port}"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_serve_with_the_vllm_backend_launches_the_hf_model_under_the_served_name(tmp_path: Path):
    from oserve.runtime.serve import Server

    config = ServeConfig().merged(
        {
            "backend.name": "vllm",
            "backend.extra_args": ["--enable-sleep-mode"],
            "orchestrator.log_dir": str(tmp_path),
        }
    )
    server = Server(config)  # plans the deployment; starts nothing yet
    replica = server.initial.replicas[0]
    launch = server.backend.launch(replica, port=8100, host="127.0.0.1", device_ids=[replica.gpu_ids[0]])
    assert launch.argv[:3] == ("vllm", "serve", "meta-llama/Meta-Llama-3-8B")
    assert launch.argv[launch.argv.index("--served-model-name") + 1] == "llama-3-8b"
    assert launch.argv[-1] == "--enable-sleep-mode" and server.backend.startup_timeout_s == 1200.0


def _accepts(port: int) -> bool:
    """Whether something accepts TCP connections on loopback ``port``."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True

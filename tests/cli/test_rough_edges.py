"""What a new user sees on the terminal: no solver banner in a plan, one line for a busy port."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from tests.conftest import SHARED_DATA

CODE = SHARED_DATA / "traces" / "azure_code_2023.csv"


def _oserve(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable,
        "-c",
        "import sys; from oserve.cli.main import main; sys.exit(main(sys.argv[1:]))",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(not CODE.exists(), reason="../shared/data is absent")
def test_plan_prints_no_solver_banner():
    out = _oserve("plan", "--model", "llama-3-8b", "--cluster", "1x4xH100", "--trace", str(CODE))
    assert out.returncode == 0, out.stderr
    assert "HiGHS" not in out.stdout and "Copyright" not in out.stdout
    assert "best homogeneous" in out.stdout


def test_serve_on_a_busy_port_is_one_line():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        out = _oserve(
            "serve",
            "--model",
            "llama-3-8b",
            "--cluster",
            "1x2xH100",
            "--backend",
            "emulated",
            "--port",
            str(port),
        )
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: cannot listen on 127.0.0.1:{port}: address already in use; choose another --host/--port"
    ]

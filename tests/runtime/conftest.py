"""Runtime fixtures: a real local Ray on the CPU with eight logical GPUs (once per session), and engine logs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(autouse=True)
def _engines_import_this_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Engine subprocesses run ``python -m oserve.cli.main``: let them import the code under test."""
    monkeypatch.setenv("PYTHONPATH", f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")


@pytest.fixture(scope="session")
def ray_runtime() -> Iterator[object]:
    """``ray.init(num_cpus=2, num_gpus=8)`` on this machine; Ray's workers (and the engines they launch) inherit
    PYTHONPATH pointing at this checkout."""
    ray = pytest.importorskip("ray")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["PYTHONPATH"] = f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    ray.init(num_cpus=2, num_gpus=8, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()

"""Fixtures shared across the suite. Living in ``tests/`` also puts this folder on ``sys.path`` (pytest's
default ``prepend`` import mode), so test modules can ``from factories import make_model``."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_profiles() -> Path:
    """``../shared/data/profiles`` (the measured Vidur per-op profiles); skips when absent."""
    root = SHARED_DATA / "profiles"
    if not (root / "h100").is_dir():
        pytest.skip(f"shared profiles not found at {root}")
    return root


@pytest.fixture(scope="session")
def shared_traces() -> Path:
    """``../shared/data/traces`` (the Azure 2023 traces); skips when absent."""
    root = SHARED_DATA / "traces"
    if not (root / "azure_conv_2023.csv").is_file():
        pytest.skip(f"shared traces not found at {root} (expected ../shared/data beside the repo)")
    return root

"""The simulation policy registry: names users type, one-line registration, help and errors from it, and a
registered policy run end to end by ``oserve simulate`` on a slice of the real conversation trace."""

from __future__ import annotations

import json

import pytest

from oserve.adapt.registry import (
    POLICIES,
    PlannedRun,
    SimContext,
    parse_policies,
    policy_help,
    register_policy,
)
from oserve.cli.main import main
from oserve.errors import ConfigError
from oserve.planner import vllm_default_deployment
from oserve.sim import StaticPolicy
from oserve.trace import load_trace, window


def test_every_policy_users_type_is_registered_with_a_help_line() -> None:
    assert {"static", "oserve-static", "oserve", "oserve-oracle", "llumnix"} <= set(POLICIES)
    assert all(policy_help(name) for name in POLICIES)
    assert parse_policies(" static, oserve ") == ["static", "oserve"]


def test_an_unknown_name_lists_the_valid_ones(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(
        ConfigError, match="choose from static, oserve-static, oserve, oserve-oracle, oserve-p99, llumnix"
    ):
        parse_policies("static,nope")
    with pytest.raises(ConfigError, match="unknown policy"):
        parse_policies(" , ")
    assert main(["simulate", "--trace", "missing.csv", "--policy", "nope"]) == 1
    err = capsys.readouterr().err
    assert "nope" in err and "llumnix" in err
    with pytest.raises(ConfigError):
        register_policy("a,b", lambda ctx: None)


def test_the_help_lists_the_registry(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # one line per option
    main(["simulate", "--help"])
    line = next(x for x in capsys.readouterr().out.splitlines() if "--policy" in x)
    assert f"compare: {', '.join(POLICIES)}." in line


def test_a_policy_registered_in_one_line_runs_in_oserve_simulate(shared_traces, tmp_path) -> None:
    def vllm_default(ctx: SimContext) -> PlannedRun:
        """vLLM's default shape on every GPU, fixed (a test policy)."""
        return PlannedRun(
            vllm_default_deployment(ctx.model, ctx.cluster), StaticPolicy(), router="round-robin"
        )

    path = tmp_path / "conv-2min.csv"
    window(load_trace(shared_traces / "azure_conv_2023.csv"), 0.0, 120.0).to_csv(path)
    register_policy("test-vllm-default", vllm_default)
    try:
        out = tmp_path / "sim.json"
        args = ["simulate", "-t", str(path), "-m", "llama-3-8b", "-c", "1x4xH100", "--json", str(out)]
        assert main([*args, "--policy", "test-vllm-default,static"]) == 0
    finally:
        del POLICIES["test-vllm-default"]
    runs = json.loads(out.read_text())["policies"]
    assert set(runs) == {"test-vllm-default", "static"}
    assert runs["test-vllm-default"]["completed"] == runs["static"]["completed"] > 0
    assert "test-vllm-default" not in POLICIES

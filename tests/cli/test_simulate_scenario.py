"""`oserve simulate --scenario`: the headline's scenarios from the CLI, built from a traces folder, scored under the
scenario's own SLO classes; a wrong spelling is one line naming the problem."""

from __future__ import annotations

import json

from oserve.cli.main import main


def _run(tmp_path, *args):
    out = tmp_path / "sim.json"
    rc = main(["simulate", *args, "--json", str(out)])
    return rc, (json.loads(out.read_text()) if out.exists() else None)


def test_two_class_scenario_is_scored_per_class(tmp_path, shared_traces):
    rc, report = _run(
        tmp_path,
        "--scenario",
        "two-class",
        "--traces",
        str(shared_traces),
        "-m",
        "llama-3.1-8b",
        "-c",
        "1x8xH100",
        "--duration",
        "60",
        "-p",
        "static,vllm",
    )
    assert rc == 0
    policies = report["policies"]
    assert set(policies) == {"static", "vllm"}
    for summary in policies.values():
        # the scenario's classes (batch long documents beside the default chat), not one SLO for all
        assert set(summary["slo_attainment_by_class"]) == {"batch", "default"}
        assert summary["requests_by_class"]["batch"] > 0
    # both policies saw the same requests
    counts = {n: s["completed"] + s["rejected"] + s["dropped"] for n, s in policies.items()}
    assert len(set(counts.values())) == 1


def test_load_scales_the_scenario(tmp_path, shared_traces):
    common = ["--scenario", "conv", "--traces", str(shared_traces), "-m", "llama-3-8b", "-c", "1x8xH100"]
    common += ["--duration", "60", "-p", "vllm"]
    _, low = _run(tmp_path, *common, "--load", "0.3")
    _, high = _run(tmp_path, *common, "--load", "0.9")
    n = {k: r["policies"]["vllm"]["completed"] for k, r in (("low", low), ("high", high))}
    assert 2.0 < n["high"] / n["low"] < 4.0  # three times the load, about three times the requests


def test_scenario_errors_are_one_line(tmp_path, shared_traces, capsys):
    assert main(["simulate", "-p", "static"]) != 0
    assert "give one of --trace FILE or --scenario NAME" in capsys.readouterr().err
    assert main(["simulate", "--scenario", "nope", "--traces", str(shared_traces)]) != 0
    assert "unknown scenario 'nope'" in capsys.readouterr().err
    assert main(["simulate", "--scenario", "long", "--traces", str(shared_traces)]) != 0
    assert "needs a model of at least" in capsys.readouterr().err  # llama-2-70b, the default, holds 4,096
    assert main(["simulate", "--scenario", "conv", "--traces", str(tmp_path)]) != 0
    assert "not found" in capsys.readouterr().err

"""`oserve simulate` end to end: JSON contract, plots, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from oserve.cli.main import main
from oserve.spec import Deployment, ReplicaConfig, get_gpu, parse_cluster
from oserve.trace import Trace

KEYS = {
    "ttft_p50",
    "ttft_p99",
    "tpot_p50",
    "tpot_p99",
    "e2e_p50",
    "e2e_p90",
    "e2e_p99",
    "e2e_mean",
    "throughput_rps",
    "tokens_per_s",
    "goodput_rps",
    "slo_attainment",
    "gpu_seconds",
    "completed",
    "dropped",
    "switches",
}


@pytest.fixture()
def small_trace(tmp_path):
    rng = np.random.default_rng(3)
    n = 300
    trace = Trace.from_arrays(
        np.sort(rng.uniform(0, 60, n)), rng.integers(50, 2000, n), rng.integers(5, 300, n)
    )
    path = tmp_path / "t.csv"
    trace.to_csv(path)
    return path


def _simulate(trace, *args: str, cluster: str = "1x4xH100") -> int:
    return main(["simulate", "--trace", str(trace), "--model", "llama-3-8b", "--cluster", cluster, *args])


def test_static_search_writes_the_json_contract_and_plot(small_trace, tmp_path, capsys) -> None:
    out, plots = tmp_path / "s.json", tmp_path / "plots"
    rc = _simulate(
        small_trace,
        "--policy",
        "static",
        "--slo",
        "ttft=1,tpot=0.1",
        "--json",
        str(out),
        "--plot",
        str(plots),
    )
    assert rc == 0
    data = json.loads(out.read_text())
    summary = data["policies"]["static"]
    assert set(summary) >= KEYS
    assert summary["completed"] + summary["dropped"] == 300
    assert summary["slo"] == {"ttft_s": 1.0, "tpot_s": 0.1}
    assert data["wall_seconds"] > 0
    assert (plots / "latency_cdf.png").stat().st_size > 10_000
    assert (plots / "timeline.png").stat().st_size > 10_000
    assert (plots / "deployment_timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "static" in capsys.readouterr().out


def test_given_deployment_is_used(small_trace, tmp_path) -> None:
    dep = Deployment.homogeneous(
        "llama-3-8b", parse_cluster("1x4xH100"), ReplicaConfig(get_gpu("h100"), tp=2)
    )
    path = tmp_path / "d.yaml"
    dep.save(path)
    out = tmp_path / "s.json"
    rc = _simulate(small_trace, "--deployment", str(path), "--router", "round-robin", "--json", str(out))
    assert rc == 0
    summary = json.loads(out.read_text())["policies"]["static"]
    assert summary["deployment"] == "2 x H100-SXM-80GB:tp2"
    assert summary["gpu_seconds"] > 0


def test_llumnix_runs_on_the_static_deployment(small_trace, tmp_path, monkeypatch) -> None:
    from oserve.adapt import registry

    searches = []
    search = registry.simulated_best_homogeneous
    monkeypatch.setattr(
        registry, "simulated_best_homogeneous", lambda *a, **k: searches.append(1) or search(*a, **k)
    )
    out = tmp_path / "s.json"
    assert _simulate(small_trace, "--policy", "static,llumnix", "--json", str(out)) == 0
    policies = json.loads(out.read_text())["policies"]
    assert policies["llumnix"]["deployment"] == policies["static"]["deployment"]
    assert policies["llumnix"]["completed"] + policies["llumnix"]["dropped"] == 300
    assert {"migrations", "migrations_running"} <= set(policies["llumnix"])
    assert len(searches) == 1  # llumnix reuses the static policy's search


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--policy", "nonsense"], 1, "unknown policy nonsense"),
        (["--slo", "ttft=abc"], 2, "not a number"),
        (["--cluster", "2x8xFOO"], 1, "unknown GPU type"),
        (["--router", "coin-flip"], 1, "unknown router"),
    ],
)
def test_bad_input_is_a_clear_error(small_trace, capsys, args, code, message) -> None:
    rc = _simulate(small_trace, *args, cluster="1x2xH100")
    captured = capsys.readouterr()
    assert rc == code
    assert message in captured.err + captured.out
    assert "Traceback" not in captured.err


def test_a_deployment_file_runs_its_own_model_or_refuses_another(small_trace, tmp_path, capsys) -> None:
    dep = Deployment.homogeneous("Llama-2-7b-hf", parse_cluster("1x4xH100"), ReplicaConfig(get_gpu("h100")))
    path = tmp_path / "d.yaml"
    dep.save(path)
    out = tmp_path / "s.json"
    base = ["simulate", "--trace", str(small_trace), "--cluster", "1x4xH100", "--deployment", str(path)]
    assert main([*base, "--json", str(out)]) == 0  # no --model: the file's, not the default 70B
    assert "llama-2-7b on" in capsys.readouterr().out
    assert (
        main([*base, "--model", "llama-2-7b", "--json", str(out)]) == 0
    )  # the same model, spelled otherwise
    capsys.readouterr()
    rc = main([*base, "--model", "llama-3-8b"])
    captured = capsys.readouterr()
    assert rc == 1 and "Traceback" not in captured.err
    message = [line for line in (captured.err + captured.out).splitlines() if line.strip()]
    assert (
        len(message) == 1
        and "the deployment serves 'Llama-2-7b-hf' but --model is 'llama-3-8b'" in message[0]
    )


def test_on_a_mixed_cluster_policies_compare_at_equal_gpu_hours(small_trace, tmp_path) -> None:
    out = tmp_path / "s.json"
    argv = [
        "simulate",
        "--trace",
        str(small_trace),
        "--model",
        "llama-3-8b",
        "--cluster",
        "1x2xH100+1x2xA100-80GB",
    ]
    assert main([*argv, "--policy", "static,llumnix", "--json", str(out)]) == 0
    policies = json.loads(out.read_text())["policies"]
    for summary in policies.values():
        assert summary["gpu_seconds"] == pytest.approx(4 * summary["span_s"])
        assert "A100-80GB" in summary["deployment"] and "H100-SXM-80GB" in summary["deployment"]


def test_mooncake_trace_shows_the_prefix_hit_rate(tmp_path, capsys, monkeypatch) -> None:
    from rich.console import Console

    from oserve.cli import simulate_cmd

    monkeypatch.setattr(simulate_cmd, "console", Console(width=250))
    path = tmp_path / "m.jsonl"
    rows = [  # the second and third requests repeat the first's 3 leading blocks (1,536 of their 2,048 tokens)
        {"timestamp": 1000 * i, "input_length": 2048, "output_length": 8, "hash_ids": [1, 2, 3, 4 + i]}
        for i in range(3)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.json"
    args = ["--router", "prefix-aware", "--deployment", str(tmp_path / "d.yaml"), "--json", str(out)]
    cluster = parse_cluster("1x1xH100")
    Deployment.homogeneous("llama-3-8b", cluster, ReplicaConfig(get_gpu("H100"))).save(tmp_path / "d.yaml")
    assert _simulate(path, *args, cluster="1x1xH100") == 0
    assert "prefix hit" in capsys.readouterr().out
    summary = json.loads(out.read_text())["policies"]["static"]
    assert summary["prefix_hit_rate"] == pytest.approx(2 * 1536 / (3 * 2048))

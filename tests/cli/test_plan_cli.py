"""`oserve plan` end to end: the JSON contract, the deployment file the simulator takes, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from oserve.cli.main import main
from oserve.spec import Deployment, parse_cluster
from oserve.trace import Trace


def test_plan_from_rates_writes_json_and_a_deployment_simulate_accepts(tmp_path, capsys) -> None:
    out, dep = tmp_path / "plan.json", tmp_path / "dep.yaml"
    rc = main(
        ["plan", "-m", "llama-3-8b", "-c", "1x8xH100", "--rates", "300:600=20,3000:40=15",
         "--json", str(out), "-o", str(dep)]
    )  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    assert "planned deployment" in text and "best homogeneous" in text
    data = json.loads(out.read_text())
    assert data["alpha"] >= data["baseline_alpha"] > 0 and data["solve_seconds"] > 0
    gpus = sorted(g for r in data["replicas"] for g in r["gpus"])
    assert gpus == list(range(8))
    assert all({"gpu", "tp", "pp", "gpus", "weights"} <= set(r) for r in data["replicas"])
    deployment = Deployment.load(dep)
    deployment.validate(parse_cluster("1x8xH100"))
    trace = tmp_path / "t.csv"
    rng = np.random.default_rng(0)
    Trace.from_arrays(
        np.sort(rng.uniform(0, 30, 200)), rng.integers(100, 4000, 200), rng.integers(5, 600, 200)
    ).to_csv(trace)
    rc = main(
        ["simulate", "-t", str(trace), "-m", "llama-3-8b", "-c", "1x8xH100", "--deployment", str(dep),
         "--policy", "static,oserve-static", "--json", str(tmp_path / "s.json")]
    )  # fmt: skip
    assert rc == 0
    summaries = json.loads((tmp_path / "s.json").read_text())["policies"]
    assert set(summaries) == {"static", "oserve-static"}
    assert all(s["completed"] == 200 for s in summaries.values())


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--rates", "512:128=4", "--trace", "x.csv"], 2, "exactly one of"),
        ([], 2, "exactly one of"),
        (["--rates", "512:128"], 1, "expected PROMPT_TOKENS"),
        (["--rates", "512:128=4", "--method", "magic"], 2, "choose one of"),
        (["--rates", "512:128=4", "--tp", "two"], 2, "integers"),
        (["--rates", "512:128=4", "--slo", "batch:e2e=60;batch:e2e=9"], 2, "class 'batch' given twice"),
        (["--rates", "512:128=4", "-c", "1x1xA10G"], 1, "fits no replica shape"),
        (["--rates", "512:128=0"], 1, "empty workload"),
    ],
)
def test_bad_input_gets_one_clear_line(args, code, message, capsys) -> None:
    rc = main(["plan", "-m", "llama-2-70b", *args])
    captured = capsys.readouterr()
    assert rc == code
    assert message in " ".join((captured.out + captured.err).split())


def test_verify_writes_the_router_the_simulation_check_chose(tmp_path, capsys) -> None:
    trace, dep = tmp_path / "t.csv", tmp_path / "dep.yaml"
    rng = np.random.default_rng(1)
    n = 300
    Trace.from_arrays(
        np.sort(rng.uniform(0, 60, n)), rng.integers(100, 6000, n), rng.integers(5, 400, n)
    ).to_csv(trace)
    rc = main(["plan", "-m", "llama-3-8b", "-c", "1x4xH100", "-t", str(trace), "--verify", "-o", str(dep)])
    assert rc == 0
    text = capsys.readouterr().out
    line = next(x for x in text.splitlines() if x.startswith("simulation check:"))
    chosen = line.split("routed by ")[1].split(" won")[0]
    assert Deployment.load(dep).router.type == chosen
    assert chosen in ("allowed-least-load", "weighted")


def test_verify_needs_a_trace(capsys) -> None:
    assert main(["plan", "-m", "llama-3-8b", "-c", "1x4xH100", "--rates", "300:60=2", "--verify"]) != 0
    assert "--verify" in capsys.readouterr().err

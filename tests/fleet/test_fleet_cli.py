"""`oserve fleet plan` / `oserve fleet simulate` end to end: files, the built-in scenario, JSON keys, plots,
and infeasible or bad input with one clear line."""

from __future__ import annotations

import json

import pytest
import yaml
from fleet_factories import FLEET_YAML, write_fleet, write_workload

from oserve.cli.main import main

SUMMARY_KEYS = {"gpu_hours", "cost_usd", "iw_slo_attainment", "niw_deadline_met", "scaling_actions"}


def test_plan_from_files_writes_yaml_and_json(tmp_path, capsys) -> None:
    fleet, work = write_fleet(tmp_path / "f.yaml"), write_workload(tmp_path / "w.csv")
    out, js = tmp_path / "plan.yaml", tmp_path / "plan.json"
    rc = main(["fleet", "plan", "--fleet", str(fleet), "--workload", str(work), "--horizon", "6h",
               "--forecaster", "seasonal", "-o", str(out), "--json", str(js)])  # fmt: skip
    assert rc == 0
    assert "fleet plan" in capsys.readouterr().out
    data = json.loads(js.read_text())
    assert data["feasible"] and data["horizon_h"] == 6 and data["gpu_hours"] > 0
    assert data["start"] == "day 2 00:00 UTC"  # the whole 48 h file is history
    counts = data["instances"]["east"]["llama-3-8b"]
    assert all(len(v) == 6 for v in counts.values()) and sum(map(sum, counts.values())) > 0
    assert yaml.safe_load(out.read_text())["instances"] == data["instances"]


def test_infeasible_plan_names_region_hour_and_constraint(tmp_path, capsys) -> None:
    tiny = FLEET_YAML.replace("on_demand: 32, spot: 8", "on_demand: 1").replace(
        "on_demand: 16", "on_demand: 1"
    )
    fleet = write_fleet(tmp_path / "f.yaml", tiny)
    work = write_workload(tmp_path / "w.csv")
    rc = main(["fleet", "plan", "--fleet", str(fleet), "--workload", str(work), "--horizon", "4h",
               "--forecaster", "seasonal"])  # fmt: skip
    assert rc == 1
    err = capsys.readouterr().err
    assert "the fleet cannot meet this workload" in err
    assert "IW demand of llama-3-8b in east at hour" in err and "GPU pool size" in err


def test_simulate_builtin_without_files_json(tmp_path) -> None:
    js = tmp_path / "sim.json"
    args = ["fleet", "simulate", "--policy", "siloed,reactive", "--days", "0.25", "--json", str(js)]
    assert main([*args, "--no-calibrate"]) == 0
    data = json.loads(js.read_text())
    assert set(data) == {"policies", "wall_seconds"}
    assert set(data["policies"]) == {"siloed", "reactive"}
    assert all(set(p) == SUMMARY_KEYS for p in data["policies"].values())
    assert data["policies"]["siloed"]["gpu_hours"] > data["policies"]["reactive"]["gpu_hours"]


def test_simulate_files_with_plots_and_check(tmp_path, capsys) -> None:
    fleet, work = write_fleet(tmp_path / "f.yaml"), write_workload(tmp_path / "w.csv")
    plots = tmp_path / "plots"
    rc = main(["fleet", "simulate", "--fleet", str(fleet), "--workload", str(work), "--policy", "siloed,reactive",
               "--check", "1", "--plot", str(plots)])  # fmt: skip
    assert rc == 0
    assert sorted(p.name for p in plots.iterdir()) == ["fleet_reactive.png", "fleet_siloed.png"]
    out = capsys.readouterr().out
    assert "check siloed" in out and "in the simulator vs" in out


def test_plan_builtin_without_files(tmp_path) -> None:
    js = tmp_path / "plan.json"
    args = ["fleet", "plan", "--horizon", "2h", "--forecaster", "seasonal", "--json", str(js)]
    assert main([*args, "--no-calibrate"]) == 0
    data = json.loads(js.read_text())
    assert set(data["instances"]) == {"us-east", "us-west", "eu-west"} and data["feasible"]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["simulate", "--policy", "magic"], 2, "unknown policy"),
        (["plan", "--horizon", "soon"], 2, "expected hours"),
        (["plan", "--forecaster", "crystal-ball"], 2, "choose one of"),
        (["plan", "--fleet", "missing.yaml"], 1, "fleet spec not found"),
    ],
)
def test_bad_input_gets_one_clear_line(args, code, message, capsys) -> None:
    assert main(["fleet", *args]) == code
    captured = capsys.readouterr()
    assert message in captured.err + captured.out

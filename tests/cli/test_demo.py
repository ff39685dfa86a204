"""`oserve demo` runs end to end on the built-in defaults and writes its report."""

from __future__ import annotations

import json

from oserve.cli.main import main


def test_demo_writes_report(tmp_path, capsys) -> None:
    out = tmp_path / "report"
    assert main(["demo", "--out", str(out), "--sim-minutes", "0.75"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["requests"] > 300
    assert len(summary["types"]) >= 4
    sims = summary["simulation"]
    baselines = {"vllm", "vllm-reload", "llumnix", "dynamo", "static"}  # every baseline of issue 20
    assert set(sims) == baselines | {"oserve-static", "oserve"}
    for s in sims.values():
        assert s["completed"] + s["dropped"] > 100
        assert set(s["slo_attainment_by_class"]) == {"default", "batch"}
    # OServe's checked plan is never worse than the best homogeneous deployment it was seeded with
    assert sims["oserve-static"]["goodput_rps"] >= sims["static"]["goodput_rps"] * 0.999
    assert set(summary["ratios"]["oserve-static"]) == baselines
    for png in (
        "workload.png",
        "latency_cdf.png",
        "deployment_timeline.png",
        "policies.png",
    ):
        assert (out / png).stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "goodput ratio" in printed and "switches" in printed

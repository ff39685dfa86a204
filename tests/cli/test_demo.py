"""`oserve demo` runs end to end on the built-in defaults and writes its report."""

from __future__ import annotations

import json

from oserve.cli.main import main


def test_demo_writes_report(tmp_path, capsys) -> None:
    out = tmp_path / "report"
    assert main(["demo", "--out", str(out), "--sim-minutes", "3"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["requests"] > 1000
    assert len(summary["types"]) >= 4
    sims = summary["simulation"]
    assert set(sims) == {"vllm-default", "static", "oserve-static", "oserve", "oserve-oracle"}
    for s in sims.values():
        assert s["completed"] + s["dropped"] > 20  # the first minutes of the code hour are sparse
    for png in ("workload.png", "latency_cdf.png", "deployment_timeline.png", "rates_forecasts.png"):
        assert (out / png).stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "oserve-oracle" in printed and "switches" in printed

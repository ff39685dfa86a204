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
    assert "vllm-default (round-robin)" in sims and len(sims) == 3
    assert any(name.startswith("oserve-static: ") for name in sims)
    for s in sims.values():
        assert s["completed"] + s["dropped"] > 20  # the first minutes of the code hour are sparse
    for png in ("workload.png", "latency_cdf.png"):
        assert (out / png).stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "best homogeneous" in printed and "OServe plan for the slice" in printed

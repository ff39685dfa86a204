"""`oserve simulate --policy oserve` shows why the run began where it did: every start candidate as it scored."""

from __future__ import annotations

import json

import numpy as np

from oserve.cli.main import main
from oserve.planner.verify import START_TIE, best_index
from oserve.trace import Trace


def test_the_adaptive_policy_prints_and_writes_its_start_candidates(tmp_path, capsys) -> None:
    trace, out = tmp_path / "t.csv", tmp_path / "s.json"
    rng = np.random.default_rng(3)
    Trace.from_arrays(
        np.sort(rng.uniform(0, 60, 300)), rng.integers(100, 6000, 300), rng.integers(5, 400, 300)
    ).to_csv(trace)
    rc = main(
        ["simulate", "-t", str(trace), "-m", "llama-3.1-8b", "-c", "1x4xH100", "--policy", "static,oserve",
         "--json", str(out)]
    )  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    assert "oserve: start candidates" in text
    data = json.loads(out.read_text())
    assert set(data["start_candidates"]) == {"oserve"}  # static has no start to rank
    candidates = data["start_candidates"]["oserve"]
    labels = [c["label"] for c in candidates]
    assert labels[0] == "plan" and "static" in labels
    static = next(c for c in candidates if c["label"] == "static")
    assert static["deployment"] == data["policies"]["static"]["deployment"]
    assert static["goodput_rps"] == data["policies"]["static"]["goodput_rps"]
    first = best_index(
        [(c["goodput_rps"], c["e2e_p99_s"], c["e2e_mean_s"]) for c in candidates], tie=START_TIE
    )
    assert candidates[first]["deployment"] == data["policies"]["oserve"]["deployment"]
    assert [c["chosen"] for c in candidates] == [i == first for i in range(len(candidates))]
    assert f"* {candidates[first]['label']}" in text  # the start is marked

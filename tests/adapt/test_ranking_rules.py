"""``benchmarks/ranking_rules.py``: a recorded start re-ranked under other rules, against static's run."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

_DIR = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(_DIR))
_SPEC = importlib.util.spec_from_file_location("ranking_rules", _DIR / "ranking_rules.py")
rules = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(rules)


def _recorded(tmp_path: Path, chosen: int) -> Path:
    """A row whose start had a pool (+3% goodput, p99 10 s) and static's shape (p99 5 s, its mean no higher)."""
    path = tmp_path / "row.json"
    path.write_text(
        json.dumps(
            {
                "args": {"setup": "m@c", "scenario": "long"},
                "rankings": [
                    {
                        "where": "oserve start",
                        "candidates": [["pool", 10.3, 10.0, 4.0], ["static", 10.0, 5.0, 4.0]],
                        "chosen": chosen,
                    }
                ],
                "policies": {"static": {"goodput_rps": 10.0, "e2e_p99": 5.0}},
            }
        )
    )
    return path


def test_a_wider_tail_tie_takes_the_shorter_tail_and_the_default_reproduces_the_record(tmp_path, capsys):
    out = tmp_path / "rules.json"
    assert rules.main([str(_recorded(tmp_path, 0)), "--json", str(out)]) == 0
    by_rule = {(r["tie"], r["tail_tie"], r["tail_gain"]): r for r in json.loads(out.read_text())["rules"]}
    default = by_rule[(rules.TIE, rules.TAIL_TIE, rules.TAIL_GAIN)]
    assert default["p99_vs_static_mean"] == pytest.approx(0.5) and default["rows_below_floor"] == ["m@c long"]
    wide = by_rule[(rules.TIE, 0.05, rules.TAIL_GAIN)]  # static's shape is within 5% of the pool's goodput
    assert wide["p99_vs_static_mean"] == pytest.approx(1.0) and wide["changed_rows"] == ["m@c long"]
    assert wide["goodput_vs_static_mean"] == pytest.approx(1.0)


def test_a_record_the_default_rule_does_not_reproduce_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="does not reproduce"):
        rules.main([str(_recorded(tmp_path, 1))])

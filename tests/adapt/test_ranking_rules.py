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


def _row(tmp_path: Path, scenario: str, rankings: list[dict], static: dict) -> Path:
    """A recorded row (``start_candidates.py``'s JSON): its rankings and static's figures."""
    path = tmp_path / "row.json"
    path.write_text(
        json.dumps(
            {
                "args": {"setup": "m@c", "scenario": scenario},
                "rankings": rankings,
                "policies": {"static": static},
            }
        )
    )
    return path


def _recorded(tmp_path: Path, chosen: int) -> Path:
    """A row whose start had a pool (+3% goodput, p99 10 s) and static's shape (p99 5 s, its mean no higher)."""
    start = {
        "where": "oserve start",
        "candidates": [["pool", 10.3, 10.0, 4.0], ["static", 10.0, 5.0, 4.0]],
        "chosen": chosen,
    }
    return _row(tmp_path, "long", [start], {"goodput_rps": 10.0, "e2e_p99": 5.0})


def test_a_wider_tail_tie_takes_the_shorter_tail_and_the_default_reproduces_the_record(tmp_path, capsys):
    out = tmp_path / "rules.json"
    assert (
        rules.main([str(_recorded(tmp_path, 0)), "--recorded-tie", str(rules.TIE), "--json", str(out)]) == 0
    )
    by_rule = {(r["tie"], r["tail_tie"], r["tail_gain"]): r for r in json.loads(out.read_text())["rules"]}
    default = by_rule[(rules.TIE, rules.TAIL_TIE, rules.TAIL_GAIN)]
    assert default["p99_vs_static_mean"] == pytest.approx(0.5) and default["rows_below_floor"] == ["m@c long"]
    wide = by_rule[(rules.TIE, 0.05, rules.TAIL_GAIN)]  # static's shape is within 5% of the pool's goodput
    assert wide["p99_vs_static_mean"] == pytest.approx(1.0) and wide["changed_rows"] == ["m@c long"]
    assert wide["goodput_vs_static_mean"] == pytest.approx(1.0)


def test_a_record_the_default_rule_does_not_reproduce_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="does not reproduce"):
        rules.main([str(_recorded(tmp_path, 1)), "--recorded-tie", str(rules.TIE)])


def test_static_is_re_ranked_under_each_rule_and_oserve_weighs_its_new_pick(tmp_path):
    """Static's shapes: A (10.0 req/s, p99 8 s) and B (9.85, 7.5 s: outside the 0.5% tie, inside 2%, a tail only
    6% better). The default keeps A; a 2% tie takes B, and oserve's pool (10.1, 7.8 s) is then behind static's tail."""
    static = {"where": "static", "candidates": [["A", 10.0, 8.0, 3.0], ["B", 9.85, 7.5, 3.0]], "chosen": 0}
    start = {
        "where": "oserve start",
        "candidates": [["static: A (weighted)", 10.0, 8.0, 3.0], ["pool", 10.1, 7.8, 3.0]],
        "chosen": 1,
    }
    path = _row(tmp_path, "conv", [static, start], {"goodput_rps": 10.0, "e2e_p99": 8.0, "e2e_mean": 3.0})
    out = tmp_path / "rules.json"
    assert rules.main([str(path), "--recorded-tie", str(rules.TIE), "--json", str(out)]) == 0
    with pytest.raises(SystemExit, match="static's pick"):  # under the 2% tie static would have taken B
        rules.main([str(path), "--recorded-tie", str(rules.START_TIE)])
    by_rule = {(r["tie"], r["tail_tie"], r["tail_gain"]): r for r in json.loads(out.read_text())["rules"]}
    assert by_rule[(rules.TIE, rules.TAIL_TIE, rules.TAIL_GAIN)]["p99_vs_static_mean"] == pytest.approx(
        8.0 / 7.8
    )
    wide = by_rule[(0.02, rules.TAIL_TIE, rules.TAIL_GAIN)]
    assert wide["p99_vs_static_mean"] == pytest.approx(7.5 / 7.8) and wide["rows_below_floor"] == ["m@c conv"]
    assert wide["goodput_vs_default_mean"] == pytest.approx(1.0)  # oserve's own pick did not change


def _rule(tie, below, goodput, worst, p99):
    return {
        "tie": tie,
        "default": tie == rules.TIE,
        "rows_below_floor": ["r"] * below,
        "goodput_vs_default_mean": goodput,
        "goodput_vs_default_worst": worst,
        "p99_vs_default_geomean": p99,
    }


def test_choose_takes_fewer_rows_below_the_floor_within_the_goodput_cost_and_else_keeps_the_default():
    default = _rule(rules.TIE, 1, 1.0, 1.0, 1.0)
    costly = _rule(0.05, 0, 0.995, 0.99, 1.3)  # clears the floor at 0.5% of mean goodput: past the cost
    cheap = _rule(0.01, 0, 0.999, 0.99, 1.01)
    assert rules.choose([default, costly, cheap]) is cheap
    assert rules.choose([default, costly]) is default
    small = _rule(0.01, 1, 1.0, 1.0, 1.015)  # same rows below the floor, P99 better by less than P99_GAIN
    assert rules.choose([default, small]) is default
    big = _rule(0.02, 1, 0.998, 0.985, 1.03)
    assert rules.choose([default, small, big]) is big
    assert rules.choose([default, _rule(0.02, 1, 0.998, 0.97, 1.5)]) is default  # one row loses 3%

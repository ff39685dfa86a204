"""``benchmarks/headline.py``'s arithmetic: the ratios and the max sustainable load on the load grid."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "headline.py"
_SPEC = importlib.util.spec_from_file_location("headline", _PATH)
headline = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(headline)

LOADS = [0.6, 0.9, 1.2]


def _run(goodput: float, p99: float, attainment: float) -> dict:
    return {"goodput_rps": goodput, "e2e_p99": p99, "slo_attainment": attainment}


def test_max_load_interpolates_where_attainment_crosses_the_target() -> None:
    assert headline.max_load(LOADS, [1.0, 0.95, 0.85]) == pytest.approx(1.05)
    assert headline.max_load(LOADS, [1.0, 0.99, 0.95]) == 1.2  # never crosses: the grid's end
    assert headline.max_load(LOADS, [0.45, 0.3, 0.2]) == pytest.approx(0.3)  # below already at the first load


def test_ratios_are_baseline_over_policy_for_p99_and_policy_over_baseline_otherwise() -> None:
    base = [_run(10, 20, 1.0), _run(12, 30, 0.95), _run(12, 60, 0.85)]
    pol = [_run(10, 10, 1.0), _run(15, 15, 0.99), _run(16, 20, 0.95)]
    r = headline.ratios(base, pol, LOADS, 1)
    assert r["p99_ratio"] == pytest.approx(2.0)
    assert r["goodput_ratio"] == pytest.approx(1.25)
    assert r["max_load_ratio"] == pytest.approx(1.2 / 1.05)


def test_a_baseline_without_goodput_loses_to_any_policy_with_some() -> None:
    zero = [_run(0, 100, 0.0)] * 3
    assert headline.ratios(zero, [_run(5, 10, 0.5)] * 3, LOADS, 1)["goodput_ratio"] == float("inf")
    assert headline.ratios(zero, zero, LOADS, 1)["goodput_ratio"] == 1.0


def test_setup_groups_expand_in_order_once() -> None:
    assert headline.setups_of("long,llama-3.1-8b@1x8xH100") == list(headline.LONG_SETUPS)
    with pytest.raises(SystemExit):
        headline.setups_of("nonsense")


def test_class_latency_is_each_class_p99_and_ratios_carry_it(shared_traces) -> None:
    """On a real two-class simulation, each class's P99 E2E / TTFT is the 99th percentile over that class's completed
    records alone; the ratios then carry them per class beside the P99 over all."""
    if not (shared_traces / "mooncake_synthetic.jsonl").is_file():
        pytest.skip("mooncake trace not found")
    from factories import long_blend
    from oserve.sim import simulate
    from oserve.spec import Deployment, ReplicaConfig, get_gpu, get_model, parse_cluster

    spec, cluster = get_model("llama-3.1-8b"), parse_cluster("1x8xH100")
    trace = long_blend(shared_traces, 60.0, 1.0)
    ctx = headline.scenario_context(trace, spec, cluster, "two-class")
    deployment = Deployment.homogeneous(spec.name, cluster, ReplicaConfig(get_gpu("H100"), tp=4))
    result = ctx.score(simulate(trace, deployment, spec, cluster, router="least-requests", slo=ctx.slo))
    by_class = headline.class_latency(result.records)
    assert set(by_class) == set(result.summary["slo_attainment_by_class"])
    assert len(by_class) == 2  # the blend's Mooncake prompts from 16k tokens are batch, the rest default
    records = result.records
    done = records[
        records["finish_s"].notna() & ~records["dropped"].astype(bool) & ~records["rejected"].astype(bool)
    ]
    for name, got in by_class.items():  # computed here from the records, not by summarize
        part = done[done["slo_class"] == name]
        assert got["e2e_p99"] == pytest.approx(np.percentile(part["finish_s"] - part["arrival_s"], 99))
        assert got["ttft_p99"] == pytest.approx(np.percentile(part["first_token_s"] - part["arrival_s"], 99))
    # a quantile of the mix lies between the classes' quantiles
    assert max(v["e2e_p99"] for v in by_class.values()) >= result.summary["e2e_p99"] * 0.99
    base = [{**_run(10, 4, 1.0), "latency_by_class": by_class}] * 3
    half = {k: {m: v / 2 for m, v in d.items()} for k, d in by_class.items()}
    faster = [{**_run(10, 2, 1.0), "latency_by_class": half}] * 3
    r = headline.ratios(base, faster, LOADS, 1)
    assert r["p99_ratio"] == pytest.approx(2.0)
    assert all(
        v == pytest.approx({"e2e_p99": 2.0, "ttft_p99": 2.0}) for v in r["p99_ratio_by_class"].values()
    )
    assert "p99_ratio_by_class" not in headline.ratios(base, [_run(10, 2, 1.0)] * 3, LOADS, 1)


def _table_row(setup: str, scenario: str, p99: dict[str, float], goodput: float = 10.0) -> dict:
    """A headline row at one load: oserve's P99 1 s, each baseline's P99 as given (so its ratio is that)."""
    runs = {
        name: [{**_run(goodput, p, 1.0), "deployment": name, "gpu_hours": 1.0, "switches": 0}]
        for name, p in {**p99, "oserve": 1.0}.items()
    }
    ratios = {b: headline.ratios(runs[b], runs["oserve"], [0.9], 0) for b in p99}
    return {
        "setup": setup,
        "scenario": scenario,
        "loads": [0.9],
        "reference_load": 0.9,
        **runs,
        "ratios": {"oserve": ratios},
    }


def test_merged_rows_summarise_and_check_the_aims(tmp_path: Path) -> None:
    import json

    from headline_table import aims, load_rows, summary, table

    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(
        json.dumps(
            {
                "rows": [
                    _table_row("s", "conv", {"static": 1.0, "vllm": 3.0}),
                    _table_row("s", "long", {"static": 1.1, "vllm": 1.0}),
                ]
            }
        )
    )
    b.write_text(
        json.dumps({"rows": [_table_row("s", "long", {"static": 1.3, "vllm": 1.2})]})
    )  # re-run: wins
    rows = load_rows([a, b])
    assert [(r["scenario"], r["ratios"]["oserve"]["static"]["p99_ratio"]) for r in rows] == [
        ("conv", 1.0),
        ("long", 1.3),
    ]
    s = summary(rows)
    assert s["vllm"]["p99_ratio"]["mean"] == pytest.approx(2.1)
    assert s["vllm"]["p99_ratio"]["best_row"] == "s conv" and s["vllm"]["p99_ratio"][
        "worst"
    ] == pytest.approx(1.2)
    checked = {x["aim"]: x for x in aims(rows)}
    assert checked[">= 1.5x mean and >= 2x best P99 against vllm"]["met"]
    assert checked[">= 1.2x P99 against static on long and two-class"]["met"]
    assert checked["never below 0.98x of static (P99, goodput, max load)"]["met"]
    assert "llumnix" not in "".join(checked)  # a baseline no row ran is not judged
    assert len(table(rows)) == 2 + 2 * 3  # the head, and each row's three policies
    slow = [_table_row("s", "long", {"static": 0.9, "vllm": 1.0})]
    floor = {x["aim"]: x for x in aims(slow)}["never below 0.98x of static (P99, goodput, max load)"]
    assert not floor["met"] and "s long p99_ratio 0.900" in floor["measured"]


def test_merge_refuses_a_file_that_is_not_a_headline_json(tmp_path: Path) -> None:
    from headline_table import load_rows

    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(SystemExit, match=r"bad\.json: not a headline JSON file"):
        load_rows([bad])


def test_merged_knees_keep_one_per_source_and_tabulate_planned_against_simulated(tmp_path: Path) -> None:
    import json

    from headline_table import knee_lines, load_knees

    knee = {"trace": "long", "planned": 0.5, "simulated": 1.5, "deployment": "4 x H100:tp2", "probes": []}
    a, b, old = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "old.json"
    a.write_text(json.dumps({"rows": [], "knees": [{**knee, "model": "m", "cluster": "c", "span_s": 240.0}]}))
    b.write_text(
        json.dumps(
            {
                "rows": [],
                "knees": [
                    {**knee, "model": "m", "cluster": "c", "span_s": 240.0},  # the same source again
                    {**knee, "model": "m", "cluster": "c", "span_s": 600.0, "simulated": 0.25},
                ],
            }
        )
    )
    old.write_text(json.dumps({"rows": []}))  # a run from before knees were kept
    knees = load_knees([a, b, old])
    assert sorted(k["span_s"] for k in knees) == [240.0, 600.0]
    lines = knee_lines(knees)
    assert len(lines) == 2 + 2
    assert "| m | c | long | 4 | 0.5 | 1.5 | x3.00 | 4 x H100:tp2 |" in lines
    assert "| m | c | long | 10 | 0.5 | 0.25 | x0.50 | 4 x H100:tp2 |" in lines


def test_the_start_bound_is_the_best_p99_among_candidates_that_keep_the_baselines_goodput() -> None:
    from start_bound import bound_lines, bound_summary, start_bound

    def cand(label: str, goodput: float, p99: float) -> dict:
        return {
            "label": label,
            "deployment": f"{label} shape",
            "router": "weighted",
            "goodput_rps": goodput,
            "e2e_p99_s": p99,
            "e2e_mean_s": p99 / 3,
            "slo_attainment": 0.95,
        }

    # static: goodput 10, P99 20 s; a candidate at P99 8 s gives up 5% of the goodput, one at 10 s keeps 99%
    # and one that completed nothing (no P99): never the bound, never the fastest
    candidates = [
        cand("plan", 10.5, 16.0),
        cand("fast", 9.5, 8.0),
        cand("kept", 9.9, 10.0),
        cand("none", 0, np.nan),
    ]
    oserve = {**_run(10.5, 16.0, 0.95), "start_candidates": candidates}
    row = {
        "setup": "m@c",
        "scenario": "long",
        "loads": LOADS,
        "reference_load": 0.9,
        "static": [_run(10, 20, 1.0)] * 3,
        "oserve": [oserve] * 3,
        "ratios": {"oserve": {"static": headline.ratios([_run(10, 20, 1.0)] * 3, [oserve] * 3, LOADS, 1)}},
    }
    bound = start_bound(row, "static")
    assert bound["p99_bound"] == pytest.approx(2.0)  # 20 / 10: "fast" is below 98% of static's goodput
    assert bound["candidate"].startswith("kept:")
    assert bound["p99_any"] == pytest.approx(2.5) and bound["goodput_bound"] == pytest.approx(1.05)
    assert start_bound({**row, "oserve": [_run(10.5, 16.0, 0.95)] * 3}, "static") is None  # an older file
    s = bound_summary([row])["static"]
    assert s["rows"] == 1 and s["p99_mean"] == pytest.approx(1.25) and s["bound_mean"] == pytest.approx(2.0)
    lines = bound_lines([row])
    assert "| m@c | long | 1.25 | 2.00 | kept: kept shape (weighted) | 2.50 | 1.050 | 4 |" in lines

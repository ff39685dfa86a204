"""Scoring per SLO class: each request against its own class's targets (a metric a class leaves out has none),
attainment per class and per type beside the overall; a single class scores as before."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from oserve.sim import summarize


def _records() -> pd.DataFrame:
    # four requests: TTFT 1 s, 40 output tokens at 50 ms (E2E 2.95 s); the last one rejected
    n = 4
    arrival = np.zeros(n)
    return pd.DataFrame(
        {
            "arrival_s": arrival,
            "first_token_s": arrival + 1.0,
            "finish_s": arrival + 1.0 + 39 * 0.05,
            "prompt_tokens": np.full(n, 1000),
            "output_tokens": np.full(n, 40),
            "dropped": np.zeros(n, bool),
            "rejected": np.array([False, False, False, True]),
            "preemptions": np.zeros(n, np.int64),
            "rerouted": np.zeros(n, np.int64),
            "type_name": np.array(["a", "a", "b", "b"], dtype=object),
            "slo_class": np.array(["default", "tight", "batch", "batch"], dtype=object),
        }
    )


@pytest.mark.parametrize(
    ("classes", "expected"),
    [
        # the default class's TTFT 2 s holds; 'tight' misses TTFT 0.5 s; 'batch' has only E2E 10 s
        ({"tight": {"ttft_s": 0.5, "tpot_s": 0.1}, "batch": {"e2e_s": 10.0}},
         {"default": 1.0, "tight": 0.0, "batch": 0.5}),
        # a length-aware TTFT: 0.2 + 0.001 x 1000 = 1.2 s holds; batch's E2E 1 s does not
        ({"tight": {"ttft_s": 0.2, "ttft_per_token_s": 0.001}, "batch": {"e2e_s": 1.0}},
         {"default": 1.0, "tight": 1.0, "batch": 0.0}),
        # a TPOT target alone: 40 ms is missed by the 50 ms steps
        ({"tight": {"tpot_s": 0.04}, "batch": {"e2e_s": 10.0}}, {"default": 1.0, "tight": 0.0, "batch": 0.5}),
    ],
)  # fmt: skip
def test_each_request_is_scored_against_its_class(classes, expected):
    s = summarize(_records(), 10.0, slo={"ttft_s": 2.0, "tpot_s": 0.1}, class_slos=classes)
    assert s["slo_attainment_by_class"] == pytest.approx(expected)
    assert s["requests_by_class"] == {"batch": 2, "default": 1, "tight": 1}
    met = sum(expected[c] * n for c, n in s["requests_by_class"].items())
    assert s["slo_attainment"] == pytest.approx(met / 4)
    assert s["goodput_rps"] == pytest.approx(met / 10.0)


def test_one_class_scores_as_before_and_reports_per_type():
    records = _records().drop(columns="slo_class")
    s = summarize(records, 10.0, slo={"ttft_s": 2.0, "tpot_s": 0.1})
    assert s["slo_attainment"] == pytest.approx(3 / 4)
    assert s["slo_attainment_by_type"] == {"a": 1.0, "b": 0.5}
    assert "slo_attainment_by_class" not in s
    assert summarize(records, 10.0, slo={"ttft_s": 0.5})["slo_attainment"] == 0.0


def test_goodput_is_over_the_offered_window_so_a_later_last_finish_costs_nothing():
    """Two runs of one trace (arrivals over 10 s): the second meets the SLO for as many requests but its last one
    finishes at 30 s instead of 12 s. Over the run's own span its goodput fell by more than half; over the
    offered window (the same for both) the two are equal, and one more request met is more goodput."""
    slo = {"e2e_s": 25.0}
    early, late = _records(), _records()
    late.loc[2, ["first_token_s", "finish_s"]] = [20.0, 21.0]  # met (E2E 21 s < 25 s), but late
    a = summarize(early, 12.0, slo=slo, offered_s=10.0)
    b = summarize(late, 30.0, slo=slo, offered_s=10.0)
    assert a["offered_s"] == b["offered_s"] == 10.0
    assert a["goodput_rps"] == b["goodput_rps"] == pytest.approx(3 / 10.0)
    assert summarize(late, 30.0, slo=slo)["goodput_rps"] == pytest.approx(3 / 30.0)  # no window: the span
    assert b["throughput_rps"] == pytest.approx(3 / 30.0)  # throughput stays over the run
    missed = late.copy()
    missed.loc[2, "finish_s"] = 26.0  # now past the E2E target
    assert summarize(missed, 30.0, slo=slo, offered_s=10.0)["goodput_rps"] < b["goodput_rps"]


def test_a_simulation_reports_goodput_over_the_trace_span():
    from factories import make_model, make_replica, make_trace
    from oserve.sim import simulate
    from oserve.spec import Deployment, parse_cluster

    cluster = parse_cluster("1x8xH100")
    trace = make_trace(300, rate_rps=200.0, seed=3, prompt_mean_tokens=300, output_mean_tokens=60)
    dep = Deployment.homogeneous("tiny", cluster, make_replica(), 2)
    s = simulate(trace, dep, make_model(), cluster).summary
    assert s["span_s"] > trace.duration_s  # a burst: the last request finishes after the last arrival
    assert s["offered_s"] == pytest.approx(trace.duration_s)
    assert s["goodput_rps"] == pytest.approx(round(s["slo_attainment"] * s["requests"]) / trace.duration_s)

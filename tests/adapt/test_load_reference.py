"""What "load 1.0" means (``adapt.load_reference``): the simulated knee of the ``static`` baseline on real traffic.
The knee is checked against fresh simulations of its own, never against the bisection's record alone."""

from __future__ import annotations

import numpy as np
import pytest

from oserve.adapt import load_reference
from oserve.adapt.load_reference import ATTAINMENT, TOLERANCE, static_knee
from oserve.adapt.scenarios import build_scenario, scale_to_load
from oserve.errors import ConfigError
from oserve.planner import default_slo, simulated_best_homogeneous
from oserve.planner.slo_classes import SloClasses, parse_slo_classes
from oserve.sim import with_classes
from oserve.spec import get_model, parse_cluster
from oserve.trace import Trace, load_trace, scale_rate, window

MODEL = get_model("llama-3-8b")
CLUSTER = parse_cluster("1x2xH100")
SLO = default_slo(MODEL, CLUSTER)


@pytest.fixture(scope="module")
def conv(shared_traces) -> Trace:
    return window(load_trace(shared_traces / "azure_conv_2023.csv"), 0.0, 120.0)


def _static_attainment(trace: Trace, classes: SloClasses | None = None) -> float:
    """Static's attainment on ``trace``, simulated here (the best shape by the module's own search, scored)."""
    slo = SLO.to_dict()

    def score(result):
        if classes is None:
            return result
        names, _ = classes.assign(trace)
        return with_classes(result, names, classes.targets(), slo)

    _, result, _ = simulated_best_homogeneous(
        trace, MODEL, CLUSTER, router="weighted", slo=slo, scoring=score
    )
    return result.summary["slo_attainment"]


def test_load_one_is_the_rate_static_just_sustains_and_a_fifth_more_breaks_it(conv, shared_traces, tmp_path):
    at_knee = build_scenario(
        "conv",
        shared_traces,
        MODEL,
        CLUSTER,
        SLO,
        load=1.0,
        minutes=2,
        reference="simulated",
        cache_dir=tmp_path,
    )
    above = build_scenario(
        "conv",
        shared_traces,
        MODEL,
        CLUSTER,
        SLO,
        load=1.25,
        minutes=2,
        reference="simulated",
        cache_dir=tmp_path,
    )
    assert _static_attainment(at_knee) >= ATTAINMENT
    assert _static_attainment(above) < ATTAINMENT
    # the bisection's own record: the knee passed, and a probe within the tolerance above it failed
    knee = static_knee(conv, MODEL, CLUSTER, parse_slo_classes("auto", SLO), 1.0, cache_dir=tmp_path)
    probes = dict(knee.probes)
    assert probes[knee.simulated] >= ATTAINMENT
    assert any(
        knee.simulated < f <= knee.simulated * (1 + TOLERANCE) + 1e-12 and a < ATTAINMENT
        for f, a in probes.items()
    )


def test_the_planned_reference_is_the_planners_figure_and_differs_from_the_knee(conv):
    planned = scale_to_load(conv, MODEL, CLUSTER, SLO, 1.0)
    simulated = scale_to_load(conv, MODEL, CLUSTER, SLO, 1.0, reference="simulated")
    knee = static_knee(conv, MODEL, CLUSTER, SloClasses(SLO), 1.0)  # memoised: the knee scale_to_load found
    # load x of the simulated reference is load x * knee / planned of the planned one
    assert len(simulated) == len(scale_to_load(conv, MODEL, CLUSTER, SLO, knee.simulated / knee.planned))
    assert len(planned) != len(simulated)


def test_a_knee_is_kept_on_disk_and_read_back_without_simulating(conv, tmp_path, monkeypatch):
    classes = SloClasses(SLO)
    short = window(conv, 0.0, 60.0)
    first = static_knee(short, MODEL, CLUSTER, classes, 0.5, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.json"))) == 1
    monkeypatch.setattr(load_reference, "_MEMO", {})

    def no_simulation(*_a, **_k):
        raise AssertionError("simulated although the knee was on disk")

    monkeypatch.setattr(load_reference, "_attainment", no_simulation)
    again = static_knee(short, MODEL, CLUSTER, classes, 0.5, cache_dir=tmp_path)
    assert again == first


def test_a_looser_class_target_moves_the_knee_up(conv):
    """The knee is scored under the scenario's classes: every request batch with a loose E2E target sustains
    more traffic than the interactive TTFT/TPOT targets."""
    short = window(conv, 0.0, 60.0)
    batch = Trace.from_arrays(
        short.arrival_s,
        short.prompt_tokens,
        short.output_tokens,
        duration_s=short.duration_s,
        name="conv-batch",
        extras={"slo_class": np.full(len(short), "batch", dtype=object)},
    )
    loose = parse_slo_classes("batch:prompt>=1000000:e2e=120", SLO)
    tight = static_knee(batch, MODEL, CLUSTER, SloClasses(SLO), 1.0)
    relaxed = static_knee(batch, MODEL, CLUSTER, loose, 1.0)
    assert relaxed.simulated > tight.simulated * (1 + TOLERANCE)
    assert _static_attainment(scale_rate(batch, relaxed.simulated, seed=0), loose) >= ATTAINMENT


@pytest.mark.parametrize("planned", [0.0, -1.0, float("nan"), float("inf")])
def test_a_planned_factor_that_is_not_a_positive_number_is_refused(conv, planned):
    with pytest.raises(ConfigError, match="planned load factor"):
        static_knee(conv, MODEL, CLUSTER, SloClasses(SLO), planned)


def test_an_unknown_load_reference_is_named(conv):
    with pytest.raises(
        ConfigError, match="unknown load reference 'measured'; choose from planned, simulated"
    ):
        scale_to_load(conv, MODEL, CLUSTER, SLO, 1.0, reference="measured")

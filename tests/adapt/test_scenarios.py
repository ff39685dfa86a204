"""The scenarios built from the real traces: ``long`` (Mooncake + Azure conv), ``two-class`` (interactive chat and
batch long documents, each class its targets), ``day`` (conv, code and long phases), and their documented
properties. Skipped with a message when ../shared/data is absent."""

from __future__ import annotations

import numpy as np
import pytest

from oserve.adapt.scenarios import (
    LONG_SCENARIOS,
    MIXED_CLUSTERS,
    SCENARIO_SLO,
    SCENARIOS,
    build_scenario,
    scenario_slo,
)
from oserve.errors import ConfigError
from oserve.planner import default_slo
from oserve.planner.slo_classes import parse_slo_classes
from oserve.spec import get_model, parse_cluster

MODEL = get_model("llama-3.1-8b")
CLUSTER = parse_cluster("1x8xH100")
SLO = default_slo(MODEL, CLUSTER)


@pytest.fixture(scope="module")
def long_trace(shared_traces):
    if not (shared_traces / "mooncake_synthetic.jsonl").is_file():
        pytest.skip(f"mooncake_synthetic.jsonl not found in {shared_traces}")
    return build_scenario("long", shared_traces, MODEL, CLUSTER, SLO, load=0.9, minutes=20)


def test_every_scenario_is_listed_and_the_class_one_names_its_slo() -> None:
    assert SCENARIOS[:4] == ("conv", "code", "shifting", "ramp")
    assert set(LONG_SCENARIOS) <= set(SCENARIOS)
    classes = parse_slo_classes(SCENARIO_SLO["two-class"], SLO)
    assert classes.names == ("default", "batch") and classes.slo_of("batch").e2e_s == 600
    assert scenario_slo("conv") == "auto"
    for model, spelling in MIXED_CLUSTERS.items():
        cluster = parse_cluster(spelling)
        assert {g.name for g in cluster.gpu_types()} == {"H100-SXM-80GB", "A100-80GB"}, model


def test_long_blends_mooncake_prompts_with_the_conversation_looped_past_its_span(long_trace) -> None:
    t = long_trace
    assert t.duration_s == pytest.approx(1200.0)  # longer than Mooncake's 1,022 s: looped
    long = t.prompt_tokens >= 16_000
    assert 0.08 < long.mean() < 0.3  # documented: about 17 % of requests
    assert t.prompt_tokens.max() > 60_000
    assert np.all(t.prompt_tokens + t.output_tokens <= MODEL.max_position_embeddings)
    short = t.prompt_tokens < 2_000
    assert short.mean() > 0.4  # the conversation's share
    # prefix blocks: one id per 512 prompt tokens; Mooncake's are shared, the conversation's never
    ids = t.extras["hash_ids"]
    assert all(len(b) == -(-p // 512) for b, p in zip(ids[:200], t.prompt_tokens[:200], strict=True))
    flat = np.concatenate(list(ids))
    _, counts = np.unique(flat, return_counts=True)
    assert (counts > 1).any()
    # the second loop's Mooncake requests share no block with the first loop's
    first = np.concatenate([b for b, a in zip(ids, t.arrival_s, strict=True) if a < 1_000 and len(b) > 40])
    second = np.concatenate([b for b, a in zip(ids, t.arrival_s, strict=True) if a >= 1_030 and len(b) > 40])
    assert len(second) and not np.intersect1d(first, second).size


def test_two_class_assigns_the_conversation_interactive_and_mooncake_batch(shared_traces) -> None:
    if not (shared_traces / "mooncake_synthetic.jsonl").is_file():
        pytest.skip(f"mooncake_synthetic.jsonl not found in {shared_traces}")
    t = build_scenario("two-class", shared_traces, MODEL, CLUSTER, SLO, load=0.9, minutes=3)
    classes = parse_slo_classes(scenario_slo("two-class"), SLO)
    names, unknown = classes.assign(t)
    assert unknown == 0
    batch, interactive = names == "batch", names == "default"
    assert batch.sum() > 100 and interactive.sum() > 100 and (batch | interactive).all()
    assert np.mean(t.prompt_tokens[batch]) > 5 * np.mean(t.prompt_tokens[interactive])
    assert np.mean(t.output_tokens[interactive]) > np.mean(t.output_tokens[batch])


def test_day_alternates_conv_code_and_long_phases(shared_traces) -> None:
    if not (shared_traces / "mooncake_synthetic.jsonl").is_file():
        pytest.skip(f"mooncake_synthetic.jsonl not found in {shared_traces}")
    t = build_scenario("day", shared_traces, MODEL, CLUSTER, SLO, load=0.9, minutes=6, phase_s=60.0)
    phase = (t.arrival_s // 60.0).astype(int)
    assert set(phase) == set(range(6))
    out = [np.mean(t.output_tokens[phase == i]) for i in range(6)]
    longest = [np.mean(t.prompt_tokens[phase == i] >= 16_000) for i in range(6)]
    for k in (0, 3):  # conversation: long outputs, no long prompts
        assert out[k] > 150 and longest[k] == 0
    for k in (1, 4):  # code: short outputs
        assert out[k] < 50 and longest[k] == 0
    for k in (2, 5):  # long documents
        assert longest[k] > 0.05
    assert "hash_ids" in t.extras


def test_the_long_scenarios_refuse_a_short_context_model(shared_traces) -> None:
    short = get_model("llama-2-70b")
    for name in LONG_SCENARIOS:
        with pytest.raises(ConfigError, match=r"llama-3\.1"):
            build_scenario(name, shared_traces, short, CLUSTER, SLO, minutes=1)


def test_swing_alternates_night_and_day_phases_of_the_code_hour(shared_traces) -> None:
    from oserve.adapt.scenarios import PHASES, SWING_LOW, scale_to_load
    from oserve.trace import load_trace, window

    assert PHASES["swing"] == ("night", "day") and PHASES["day"] == ("conv", "code", "long")
    t = build_scenario("swing", shared_traces, MODEL, CLUSTER, SLO, load=0.9, minutes=20, phase_s=300.0)
    assert t.duration_s == pytest.approx(1200.0)
    phase = (t.arrival_s // 300.0).astype(int)
    assert set(phase) == set(range(4))
    night, day = phase % 2 == 0, phase % 2 == 1
    # the day phases are the code hour at the scaled rate, to the request (the same resample of the same source)
    code = scale_to_load(
        window(load_trace(shared_traces / "azure_code_2023.csv"), 0.0, 1200.0), MODEL, CLUSTER, SLO, 0.9
    )
    source_day = (code.arrival_s // 300.0).astype(int) % 2 == 1
    assert day.sum() == source_day.sum()
    np.testing.assert_array_equal(np.sort(t.prompt_tokens[day]), np.sort(code.prompt_tokens[source_day]))
    # the night phases are thinned to SWING_LOW of the rate (the code hour's 300 s slices differ by ~20%)
    assert 0.5 * SWING_LOW < night.sum() / day.sum() < 1.5 * SWING_LOW
    source_night = (code.arrival_s // 300.0).astype(int) % 2 == 0
    assert night.sum() == pytest.approx(SWING_LOW * source_night.sum(), rel=0.15)
    # only the rate moves: the night keeps the code mix (long prompts, short outputs)
    assert np.mean(t.output_tokens[night]) < 50 and np.mean(t.prompt_tokens[night]) > 1_000
    assert np.mean(t.prompt_tokens[night]) == pytest.approx(np.mean(t.prompt_tokens[day]), rel=0.25)


def test_an_offset_window_holds_later_requests_of_the_hour_and_a_past_the_end_offset_is_refused(
    shared_traces,
) -> None:
    from oserve.trace import load_trace

    hour = load_trace(shared_traces / "azure_conv_2023.csv")
    first = build_scenario("conv", shared_traces, MODEL, CLUSTER, SLO, load=0.9, minutes=4)
    later = build_scenario("conv", shared_traces, MODEL, CLUSTER, SLO, load=0.9, minutes=4, offset_minutes=30)
    assert later.duration_s == pytest.approx(240.0) and later.arrival_s.min() >= 0.0
    # the window's prompts are the hour's minutes 30-34 (resampled to the load), not its first four
    lo, hi = np.searchsorted(hour.arrival_s, [1800.0, 2040.0])
    assert set(np.unique(later.prompt_tokens)) <= set(np.unique(hour.prompt_tokens[lo:hi]))
    assert not np.array_equal(np.sort(first.prompt_tokens)[:100], np.sort(later.prompt_tokens)[:100])
    with pytest.raises(ConfigError, match=r"past the end of azure_conv_2023\.csv"):
        build_scenario("conv", shared_traces, MODEL, CLUSTER, SLO, load=0.9, minutes=4, offset_minutes=90)
    with pytest.raises(ConfigError, match="offset must be >= 0"):
        build_scenario("conv", shared_traces, MODEL, CLUSTER, SLO, load=0.9, minutes=4, offset_minutes=-1)

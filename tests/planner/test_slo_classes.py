"""``--slo`` per class: spellings, one-line errors naming the bad part, and which class each request is in."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oserve.errors import ConfigError
from oserve.planner import Slo, parse_slo_targets
from oserve.planner.slo_classes import DEFAULT_CLASS, parse_slo_classes, type_slos
from oserve.trace import Trace, TypeGrid, load_trace, window

AUTO = Slo(1.5, 0.08, None, 0.0003)


def test_a_single_class_spelling_means_what_it_always_did():
    classes = parse_slo_classes("ttft=2,tpot=0.2,e2e=30", AUTO)
    assert classes.single and classes.names == (DEFAULT_CLASS,)
    assert classes.default == Slo.from_dict(parse_slo_targets("ttft=2,tpot=0.2,e2e=30"))
    assert parse_slo_classes("auto", AUTO).default == AUTO
    # keys left out of the default class take auto's (a flat TTFT drops auto's per-token part)
    assert parse_slo_classes("tpot=0.05", AUTO).default == Slo(1.5, 0.05, None, 0.0003)
    assert parse_slo_classes("ttft=1", AUTO).default == Slo(1.0, 0.08)


def test_classes_with_rules_and_metrics_left_out():
    text = "ttft=2,tpot=0.1;interactive:ttft=1,tpot=0.05;batch:prompt>=16000:e2e=600;bulk:auto"
    classes = parse_slo_classes(text, AUTO)
    assert classes.names == ("default", "interactive", "batch", "bulk")
    batch = classes.named[1]
    assert batch.prompt_min_tokens == 16000
    assert batch.slo.e2e_s == 600 and math.isinf(batch.slo.ttft_s) and math.isinf(batch.slo.tpot_s)
    assert batch.slo.to_dict() == {"e2e_s": 600.0}  # a metric left out is no target, not written
    assert classes.slo_of("bulk") == AUTO and classes.slo_of("nope") == classes.default
    assert classes.prompt_thresholds == (16000,)
    assert "no target" not in classes.describe() and "E2E <= 600 s" in classes.describe()


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("batch:ttfx=1", "ttfx"),
        ("batch:e2e=60;batch:e2e=9", "'batch' given twice"),
        ("ttft=1;tpot=2", "default class .* twice"),
        ("batch:e2e=abc", "batch.*not a number"),
        ("batch:e2e=-3", "batch.*positive"),
        ("batch:", "no targets"),
        ("ttft=1;;batch:e2e=5", "empty class"),
        ("batch:prompt>=16000", "needs targets"),
        ("batch:prompt>=lots:e2e=5", "not a number of tokens"),
        ("batch:prompt>=0:e2e=5", "whole number"),
        ("batch:prompt<5:e2e=5", "prompt>=TOKENS"),
        ("9lives:e2e=5", "class name"),
        ("a:b:c:e2e=5", "too many"),
        ("default:prompt>=5:e2e=5", "default class takes no prompt rule"),
        ("batch:ttft=1,,tpot=2", "batch.*empty"),
    ],
)
def test_bad_strings_fail_with_one_line_naming_the_part(text, names):
    with pytest.raises(ConfigError, match=names) as info:
        parse_slo_classes(text, AUTO)
    assert "\n" not in str(info.value)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="abtfpoe2=,;:.+/-<>0169 kmrxnil_", max_size=60))
def test_parsing_never_raises_anything_but_config_error(text):
    try:
        classes = parse_slo_classes(text, AUTO)
    except ConfigError:
        return
    assert classes.default is not None and len(set(classes.names)) == len(classes.names)


def _blend(shared_traces) -> Trace:
    conv = window(load_trace(shared_traces / "azure_conv_2023.csv"), 0, 30)
    moon = window(load_trace(shared_traces / "mooncake_synthetic.jsonl"), 0, 30)
    from oserve.trace import blend

    return blend([conv, moon])


def test_a_requests_class_is_its_column_else_its_prompt_rule_else_the_default(shared_traces):
    base = _blend(shared_traces)
    rng = np.random.default_rng(1)
    named = rng.choice(np.array(["interactive", "", "mystery"], dtype=object), len(base))
    trace = Trace.from_arrays(
        base.arrival_s, base.prompt_tokens, base.output_tokens, duration_s=base.duration_s,
        extras={"slo_class": named},
    )  # fmt: skip
    classes = parse_slo_classes(
        "ttft=2,tpot=0.1;interactive:ttft=1,tpot=0.05;batch:prompt>=16000:e2e=600", AUTO
    )
    got, unknown = classes.assign(trace)
    assert unknown == int(np.sum(named == "mystery"))
    assert np.all(got[named == "interactive"] == "interactive")
    rest = named != "interactive"
    long = trace.prompt_tokens >= 16000
    assert np.all(got[rest & long] == "batch") and np.all(got[rest & ~long] == "default")
    assert classes.assign_one(20000, "INTERACTIVE ") == "interactive"
    assert classes.assign_one(20000, "mystery") == "batch" and classes.assign_one(100) == "default"


def test_a_type_mixing_classes_is_planned_for_the_strictest_of_each_metric(shared_traces):
    trace = _blend(shared_traces)
    classes = parse_slo_classes("ttft=2,tpot=0.1;batch:prompt>=16000:e2e=600,tpot=0.5", AUTO)
    one_bucket = TypeGrid((), ())  # every request in one type: both classes mix there
    (slo,) = type_slos(classes, trace, one_bucket).values()
    assert (slo.ttft_s, slo.tpot_s, slo.e2e_s) == (2.0, 0.1, 600.0)
    split = TypeGrid((16000,), ())  # cut at the rule: the long type is the batch class alone
    per_type = type_slos(classes, trace, split)
    assert list(per_type) == ["p>=16000,o:any"] and per_type["p>=16000,o:any"] == classes.slo_of("batch")

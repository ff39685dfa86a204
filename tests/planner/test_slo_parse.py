"""``--slo`` spellings: flat and length-aware TTFT, bad strings fail with the part named."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oserve.errors import ConfigError
from oserve.planner import Slo, parse_slo_targets

positive = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False)


@given(positive, positive, positive)
def test_length_aware_round_trip(base, per, tpot):
    got = parse_slo_targets(f"ttft={base!r}+{per!r}/tok,tpot={tpot!r}")
    slo = Slo.from_dict(got)
    assert slo.ttft_target(1000) == pytest.approx(base + 1000 * per)
    assert Slo.from_dict(slo.to_dict()) == slo


def test_old_spelling_still_parses():
    assert parse_slo_targets("ttft=2,tpot=0.2,e2e=30") == {"ttft_s": 2.0, "tpot_s": 0.2, "e2e_s": 30.0}
    assert parse_slo_targets("auto") == {}


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("ttft=abc", "ttft"),
        ("ttfx=1", "ttfx"),
        ("ttft=1,,tpot=1", "empty"),
        ("ttft=0.5+0.0002", "/tok"),
        ("ttft=-1", "positive"),
        ("ttft=1,ttft=2", "twice"),
    ],
)
def test_bad_strings_name_the_part(text, names):
    with pytest.raises(ConfigError, match=names):
        parse_slo_targets(text)

"""The plan table never prints ``-0.000x``: a load scale that rounds to zero says "cannot serve"."""

from __future__ import annotations

import pytest

from oserve.cli.plan_cmd import _alpha, _ratio


@pytest.mark.parametrize(
    ("alpha", "base", "text", "ratio"),
    [
        (-0.0, 1.0, "cannot serve", "cannot serve"),
        (-1e-9, 1.0, "cannot serve", "cannot serve"),
        (2.0, 1.0, "2.000", "2.000x"),
        (1.0, 0.0, "1.000", "-"),
    ],
)
def test_no_negative_zero(alpha, base, text, ratio):
    assert _alpha(alpha) == text and _ratio(alpha, base) == ratio

"""Property tests (hypothesis): parser round trips, garbage never escapes as a non-OServe error, transforms."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oserve.errors import OServeError, TraceError
from oserve.trace import Trace, alternate, load_trace, scale_rate, window

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_counts = st.integers(min_value=0, max_value=2**26)
_rows = st.lists(
    st.tuples(st.floats(0, 1e7, allow_nan=False, allow_infinity=False), _counts, _counts),
    min_size=1,
    max_size=50,
)


@FAST
@given(rows=_rows)
def test_plain_csv_round_trip(rows: list[tuple[float, int, int]]) -> None:
    arrival, prompt, output = map(np.asarray, zip(*rows, strict=True))
    t = Trace.from_arrays(arrival, prompt, output)
    with tempfile.TemporaryDirectory() as tmp:
        back = load_trace(t.to_csv(Path(tmp) / "t.csv"))
    np.testing.assert_array_equal(back.arrival_s, t.arrival_s)
    np.testing.assert_array_equal(back.prompt_tokens, t.prompt_tokens)
    np.testing.assert_array_equal(back.output_tokens, t.output_tokens)


_HEADERS = [
    "TIMESTAMP,ContextTokens,GeneratedTokens\n",
    "arrival_s,input_tokens,output_tokens\n",
    "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n",
    '{"timestamp": 0, "input_length": 1, "output_length": 1, "hash_ids": []}\n',
    "",
]
_cells = st.one_of(
    st.integers(-5, 10**6).map(str),
    st.sampled_from(["", "x", "1.5", "nan", "2024-01-01", '"', "{", "[1,", "\x00", " "]),
    st.text(max_size=8),
)
_lines = st.lists(_cells, min_size=0, max_size=7).map(lambda cells: ",".join(cells) + "\n")


@FAST
@given(header=st.sampled_from(_HEADERS), lines=st.lists(_lines, max_size=6), junk=st.binary(max_size=16))
def test_garbage_never_escapes_as_a_foreign_error(header: str, lines: list[str], junk: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "g.csv"
        path.write_bytes((header + "".join(lines)).encode("utf-8", "surrogatepass") + junk)
        try:
            trace = load_trace(path)
        except OServeError:
            return
        assert len(trace) > 0 and np.all(np.diff(trace.arrival_s) >= 0)


_trace = st.builds(
    lambda n, rate, seed: Trace.from_arrays(
        np.sort(np.random.default_rng(seed).uniform(0, n / rate, n)),
        np.random.default_rng(seed + 1).integers(1, 5000, n),
        np.random.default_rng(seed + 2).integers(1, 500, n),
        duration_s=n / rate,
    ),
    st.integers(200, 3000),
    st.floats(1.0, 50.0),
    st.integers(0, 1000),
)


@FAST
@given(t=_trace, factor=st.floats(0.1, 4.0), seed=st.integers(0, 2**32 - 1))
def test_scaling_keeps_about_rate_times_factor(t: Trace, factor: float, seed: int) -> None:
    scaled = scale_rate(t, factor, seed=seed)
    expected = len(t) * factor
    assert abs(len(scaled) - expected) <= 6 * np.sqrt(expected) + 2
    assert scaled.duration_s == t.duration_s
    assert np.all(np.diff(scaled.arrival_s) >= 0) and scaled.arrival_s.max(initial=0) <= t.duration_s


@FAST
@given(t=_trace, a=st.floats(0, 1), b=st.floats(0, 1))
def test_window_bounds(t: Trace, a: float, b: float) -> None:
    start, end = sorted((a * t.duration_s, b * t.duration_s))
    w = window(t, start, end)
    assert w.duration_s == end - start
    assert len(w) == ((t.arrival_s >= start) & (t.arrival_s < end)).sum()
    assert np.all((w.arrival_s >= 0) & (w.arrival_s < max(end - start, 1e-12)))


@FAST
@given(a=_trace, b=_trace, phases=st.integers(1, 8))
def test_alternating_phases_order(a: Trace, b: Trace, phases: int) -> None:
    tagged_a = Trace.from_arrays(
        a.arrival_s,
        a.prompt_tokens,
        a.output_tokens,
        duration_s=a.duration_s,
        extras={"src": np.zeros(len(a), dtype=np.int64)},
    )
    tagged_b = Trace.from_arrays(
        b.arrival_s,
        b.prompt_tokens,
        b.output_tokens,
        duration_s=b.duration_s,
        extras={"src": np.ones(len(b), dtype=np.int64)},
    )
    total = min(a.duration_s, b.duration_s)
    phase_s = total / phases
    alt = alternate([tagged_a, tagged_b], phase_s=phase_s)
    assert alt.duration_s == total and np.all(np.diff(alt.arrival_s) >= 0)
    idx = np.minimum((alt.arrival_s // phase_s).astype(np.int64), phases - 1)
    clear = np.abs(alt.arrival_s / phase_s - np.round(alt.arrival_s / phase_s)) > 1e-9  # off phase boundaries
    np.testing.assert_array_equal(alt.extras["src"][clear], (idx % 2)[clear])


def test_an_azure_timestamp_of_minus_one_is_a_named_bad_value(tmp_path) -> None:
    """Found by the property above: ISO 8601 parsing reads "-1" as the year -1, which escaped as pandas'
    NotImplementedError when the origin was formatted."""
    path = tmp_path / "t.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n-1,0,0\n2023-11-16 18:15:46.6805900,10,5\n")
    with pytest.raises(TraceError, match=r"t\.csv:2: TIMESTAMP: '-1' is not an ISO 8601 date-time"):
        load_trace(path)

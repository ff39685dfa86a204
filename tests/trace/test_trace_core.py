"""The ``Trace`` value: construction, invariants, accessors and the plain-format writers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from factories import make_trace
from oserve.errors import TraceError
from oserve.trace import Trace, load_trace


def test_from_arrays_sorts_and_freezes() -> None:
    t = Trace.from_arrays([2.0, 0.0, 1.0], [30, 10, 20], [3, 1, 2], extras={"tag": ["c", "a", "b"]})
    assert t.arrival_s.tolist() == [0.0, 1.0, 2.0]
    assert t.prompt_tokens.tolist() == [10, 20, 30]
    assert t.extras["tag"].tolist() == ["a", "b", "c"]
    for col in (t.arrival_s, t.prompt_tokens, t.output_tokens):
        assert col.flags.c_contiguous and not col.flags.writeable
    assert t.arrival_s.dtype == np.float64 and t.prompt_tokens.dtype == np.int64
    with pytest.raises(ValueError):
        t.arrival_s[0] = 5.0


def test_input_arrays_are_copied() -> None:
    arrival = np.array([0.0, 1.0])
    t = Trace.from_arrays(arrival, [1, 2], [1, 2])
    arrival[0] = 0.5
    assert t.arrival_s[0] == 0.0


def test_rate_and_duration() -> None:
    t = Trace.from_arrays(np.arange(10.0), np.ones(10), np.ones(10), duration_s=20.0)
    assert len(t) == 10 and t.duration_s == 20.0 and t.rate_rps == pytest.approx(0.5)
    assert Trace.from_arrays([], [], []).rate_rps == 0.0


@pytest.mark.parametrize(
    ("arrival", "prompt", "output", "match"),
    [
        ([-1.0], [1], [1], "arrival"),
        ([np.nan], [1], [1], "arrival"),
        ([0.0], [-1], [1], "token"),
        ([0.0], [1], [-2], "token"),
    ],
)
def test_from_arrays_rejects_bad_values(
    arrival: list[float], prompt: list[int], output: list[int], match: str
) -> None:
    with pytest.raises(TraceError, match=match):
        Trace.from_arrays(arrival, prompt, output)


def test_mismatched_lengths() -> None:
    with pytest.raises(TraceError, match="same length"):
        Trace.from_arrays([0.0, 1.0], [1], [1, 2])


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".parquet"])
def test_writers_round_trip_with_extras(tmp_path: Path, suffix: str) -> None:
    t = make_trace(
        50,
        seed=3,
        Model=np.array(["a", "b"] * 25, dtype=object),
        hash_ids=np.array([np.arange(i % 4, dtype=np.int64) for i in range(50)], dtype=object),
    )
    out = tmp_path / f"t{suffix}"
    t.to_parquet(out) if suffix == ".parquet" else t.to_csv(out)
    back = load_trace(out)
    assert back.report.format == "plain"
    np.testing.assert_array_equal(back.arrival_s, t.arrival_s)
    np.testing.assert_array_equal(back.prompt_tokens, t.prompt_tokens)
    np.testing.assert_array_equal(back.output_tokens, t.output_tokens)
    assert back.extras["Model"].tolist() == t.extras["Model"].tolist()
    assert [list(h) for h in back.extras["hash_ids"]] == [list(h) for h in t.extras["hash_ids"]]


def test_plain_header() -> None:
    assert list(make_trace(3).to_frame().columns) == ["arrival_s", "input_tokens", "output_tokens"]

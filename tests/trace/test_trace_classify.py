"""Request typing (``TypeGrid``, ``LiveClassifier``) and per-type workloads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from factories import make_trace
from oserve.errors import ConfigError
from oserve.trace import (
    LiveClassifier,
    Trace,
    TypeGrid,
    Workload,
    WorkloadSeries,
    classify,
    load_trace,
    measure_workload,
    workload_series,
)
from oserve.trace.classify import OnlineClassifier


def test_grid_names_and_indices() -> None:
    grid = TypeGrid(prompt_edges=(1024, 4096), output_edges=(128,))
    assert grid.num_types == 6
    assert grid.names == [
        "p<1024,o<128",
        "p<1024,o>=128",
        "p[1024,4096),o<128",
        "p[1024,4096),o>=128",
        "p>=4096,o<128",
        "p>=4096,o>=128",
    ]
    assert [t.short for t in grid.types][:2] == ["p0o0", "p0o1"]
    t = Trace.from_arrays([0, 1, 2, 3], [10, 1024, 4095, 9000], [127, 128, 5, 500])
    assert classify(t, grid).tolist() == [0, 3, 2, 5]


@pytest.mark.parametrize("edges", [(0,), (10, 10), (20, 10), (-5,)])
def test_grid_rejects_bad_edges(edges: tuple[int, ...]) -> None:
    with pytest.raises(ConfigError):
        TypeGrid(prompt_edges=edges)


@pytest.mark.parametrize(
    ("num_types", "shape"), [(1, (1, 1)), (4, (2, 2)), (6, (3, 2)), (9, (3, 3)), (8, (4, 2))]
)
def test_for_types_from_quantiles(num_types: int, shape: tuple[int, int]) -> None:
    grid = TypeGrid.for_types(make_trace(5000), num_types)
    assert (grid.num_prompt_bins, grid.num_output_bins) == shape


def test_quantile_grid_on_real_conv(shared_traces: Path) -> None:
    conv = load_trace(shared_traces / "azure_conv_2023.csv")
    grid = TypeGrid.for_types(conv, 4)
    assert 900 <= grid.prompt_edges[0] <= 1100  # near the median prompt (1,020)
    shares = measure_workload(conv, grid).shares
    assert shares.sum() == pytest.approx(1.0) and shares.min() > 0.1


@pytest.mark.parametrize("num_types", [1, 4, 6, 9])
def test_every_request_gets_one_type_and_rates_sum(num_types: int) -> None:
    t = make_trace(3000, rate_rps=8.0, seed=num_types)
    grid = TypeGrid.for_types(t, num_types)
    types = grid.classify(t)
    assert types.shape == (len(t),) and types.min() >= 0 and types.max() < grid.num_types
    wl = measure_workload(t, grid)
    assert sum(x.count for x in wl.types) == len(t)
    assert wl.total_rate_rps == pytest.approx(t.rate_rps)
    series = workload_series(t, grid, 60.0)
    assert series.counts.sum() == len(t) and series.rates_rps.shape == (len(series.start_s), grid.num_types)
    weighted = (series.total_rate_rps * series.window_len_s).sum() / series.window_len_s.sum()
    assert weighted == pytest.approx(t.rate_rps)


def test_workload_serialises() -> None:
    t = make_trace(500)
    grid = TypeGrid((1000,), (200,))
    wl = measure_workload(t, grid, start_s=10.0, end_s=30.0)
    assert wl.duration_s == 20.0
    back = Workload.from_dict(json.loads(wl.to_json()))
    assert back == wl
    series = workload_series(t, grid, 5.0)
    again = WorkloadSeries.from_dict(json.loads(json.dumps(series.to_dict())))
    np.testing.assert_array_equal(again.counts, series.counts)
    np.testing.assert_allclose(again.rates_rps, series.rates_rps)
    assert TypeGrid.from_dict(grid.to_dict()) == grid


def test_live_classifier_uses_max_tokens_and_estimate() -> None:
    grid = TypeGrid((1000,), (100,))
    t = Trace.from_arrays(np.arange(4.0), [10, 20, 2000, 3000], [50, 60, 400, 500])
    live = LiveClassifier.fit(t, grid)
    assert live.output_estimate_tokens == (55.0, 450.0)
    # no max_tokens: the per-prompt-bin estimate decides; a small max_tokens caps it
    assert live.classify([10, 2000]).tolist() == [0, 3]
    assert live.classify([10, 2000], [500, 16]).tolist() == [0, 2]
    assert live.classify([2000], [np.nan]).tolist() == [3]
    with pytest.raises(ConfigError):
        LiveClassifier(grid, (1.0,))


def test_online_refit_is_numpys_median_of_the_window() -> None:
    """``OnlineClassifier.observe`` refits a bin to the median of its last ``window`` outputs, the value
    ``np.median`` gives (even and odd windows, before and after the window fills)."""
    grid = TypeGrid((100,), (50,))
    rng = np.random.default_rng(3)
    online = OnlineClassifier(grid, window=9, refit_every=1)
    seen: list[int] = []
    for out in rng.integers(1, 5000, 40).tolist():
        online.observe(10, out)
        seen.append(out)
        expect = float(np.median(seen[-9:]))
        assert online.classify(10, None)[1] == expect
        assert online.live.output_estimate_tokens[0] == expect

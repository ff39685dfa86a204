"""``oserve.perf.fit``: reading measurement CSVs, and fitting stack factors that recover a known truth."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from factories import write_points
from oserve.errors import CalibrationError
from oserve.perf import Calibration, StackFactors, builtin_calibration
from oserve.perf.fit import POINT_COLUMNS, fit_points, predict_points, read_points
from oserve.spec import get_gpu

H100 = get_gpu("h100").name
# <= 8 TP1 measurements spanning short/long prefills and small/large decode batches
TRAIN = [
    ("prefill", 1, 32),
    ("prefill", 1, 512),
    ("prefill", 1, 2048),
    ("prefill", 2, 4096),
    ("decode", 1, 128),
    ("decode", 1, 4096),
    ("decode", 32, 1024),
    ("decode", 256, 2048),
]
QUERY = [
    ("prefill", 1, 64),
    ("prefill", 2, 512),
    ("prefill", 1, 4096),
    ("decode", 1, 128),
    ("decode", 8, 256),
    ("decode", 32, 1024),
    ("decode", 128, 4096),
]


def _frame(
    rows: list[tuple[str, int, int]], tps: tuple[int, ...] = (1,), model: str = "llama-3-8b"
) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"model": model, "gpu": "h100", "tp": tp, "pp": 1, "phase": p, "num_seqs": n, "length": length}
            for tp in tps
            for p, n, length in rows
        ]
    )


def _truth(**factors: float) -> Calibration:
    base = builtin_calibration()
    start = base.for_gpu(get_gpu("h100"))
    return base.with_gpu(H100, replace(start, stack=StackFactors(**factors)))


def _measure(truth: Calibration, rows=TRAIN) -> pd.DataFrame:
    return predict_points(_frame(rows), truth).rename(columns={"predicted_seconds": "seconds"})


def _max_error(calib: Calibration, truth: Calibration, tps: tuple[int, ...]) -> float:
    query = _frame(QUERY, tps)
    got = predict_points(query, calib)["predicted_seconds"]
    want = predict_points(query, truth)["predicted_seconds"]
    return float((got / want - 1).abs().max())


def _decode_ms(calib: Calibration, tp: int, model: str = "llama-3-8b") -> float:
    row = _frame([("decode", 1, 1024)], (tp,), model)
    return 1e3 * float(predict_points(row, calib)["predicted_seconds"].iloc[0])


def test_the_structure_spans_both_ends_of_real_stacks() -> None:
    """Today's vLLM (CUDA graphs, the default calibration) decodes ~3x faster at TP8 than at TP1; an eager stack
    whose all-reduces pay a per-GPU skew decodes no faster at TP8 than at TP4."""
    today = builtin_calibration()
    assert _decode_ms(today, 1) / _decode_ms(today, 8) > 2.5
    eager = _truth(iteration_overhead_s=0.004, allreduce_skew_s_per_gpu=20e-6)
    assert _decode_ms(eager, 8) >= 0.98 * _decode_ms(eager, 4)
    assert _decode_ms(eager, 1) / _decode_ms(eager, 8) < 1.6


@pytest.fixture(scope="module")
def fitted_overhead():
    truth = _truth(iteration_overhead_s=0.003)
    return truth, fit_points(_measure(truth), builtin_calibration())


def test_fit_recovers_a_per_step_overhead(fitted_overhead) -> None:
    _, result = fitted_overhead
    assert result.num_points == len(TRAIN)
    assert result.mape_before > 0.05  # the truth is far from the built-in stack ...
    assert result.mape_after < 0.01  # ... and the fit closes the gap
    assert set(result.factors) == {H100}
    assert result.calibration.per_gpu[H100].stack == result.factors[H100]
    assert result.factors[H100].iteration_overhead_s == pytest.approx(0.003, rel=0.1)
    # TP1 points say nothing about communication, so the prior keeps it where it was
    assert result.factors[H100].comm_scale == pytest.approx(1.0, abs=1e-3)
    assert "8 points" in result.calibration.note


def test_fit_on_one_tp_degree_predicts_the_others(fitted_overhead) -> None:
    truth, result = fitted_overhead
    assert _max_error(result.calibration, truth, (2, 4, 8)) < 0.05
    assert _max_error(builtin_calibration(), truth, (2, 4, 8)) > 0.20  # the check can fail


def test_eight_points_over_two_tp_degrees_find_the_skew_that_flattens_tp8() -> None:
    """At one TP degree a per-GPU all-reduce skew is a constant per step, indistinguishable from the step
    overhead; four points at each of TP1 and TP2 tell them apart and predict TP4/TP8 of an eager stack."""
    truth = _truth(iteration_overhead_s=0.002, allreduce_skew_s_per_gpu=15e-6)
    rows = pd.concat([_frame(TRAIN[::2], (1,)), _frame(TRAIN[1::2], (2,))], ignore_index=True)
    points = predict_points(rows, truth).rename(columns={"predicted_seconds": "seconds"})
    result = fit_points(points, builtin_calibration())
    assert result.num_points == 8
    assert result.factors[H100].allreduce_skew_s_per_gpu == pytest.approx(15e-6, rel=0.25)
    assert _max_error(result.calibration, truth, (4, 8)) < 0.10
    assert _max_error(builtin_calibration(), truth, (4, 8)) > 0.30


def test_fit_on_builtin_truth_changes_little() -> None:
    base = builtin_calibration()
    result = fit_points(_measure(base), base)
    assert result.mape_before == pytest.approx(0.0, abs=1e-12)
    s = result.factors[H100]
    for value in (s.compute_scale, s.memory_scale, s.attention_scale, s.comm_scale):
        assert value == pytest.approx(1.0, abs=1e-3)
    assert s.iteration_overhead_s == pytest.approx(0.0, abs=1e-5)


def test_fit_empty_points() -> None:
    with pytest.raises(CalibrationError, match="no measurement points"):
        fit_points(_frame([]).assign(seconds=[]))


def test_predict_points_adds_column_and_keeps_rows() -> None:
    query = _frame(QUERY, (1, 2))
    out = predict_points(query)
    assert list(out.columns) == [*query.columns, "predicted_seconds"]
    assert len(out) == len(query) and (out["predicted_seconds"] > 0).all()
    assert "predicted_seconds" not in query.columns


# -- read_points --------------------------------------------------------------------------------------------------

GOOD = {
    "model": "llama-3-8b",
    "gpu": "h100",
    "tp": 1,
    "pp": 1,
    "phase": "decode",
    "num_seqs": 8,
    "length": 512,
    "seconds": 0.012,
}


def test_read_points(tmp_path: Path) -> None:
    path = write_points(
        tmp_path / "p.csv",
        [GOOD, {**GOOD, "phase": " Prefill", "model": "meta-llama/Meta-Llama-3-8B", "gpu": "H100-SXM-80GB"}],
    )
    points = read_points(path)
    assert list(points.columns) == list(POINT_COLUMNS)
    assert list(points["phase"]) == ["decode", "prefill"]
    assert points["tp"].tolist() == [1, 1] and points["seconds"].tolist() == [0.012, 0.012]


def test_read_points_without_seconds(tmp_path: Path) -> None:
    columns = [c for c in POINT_COLUMNS if c != "seconds"]
    points = read_points(write_points(tmp_path / "q.csv", [GOOD], columns), need_seconds=False)
    assert "seconds" not in points.columns and len(points) == 1


@pytest.mark.parametrize(
    ("bad", "line", "expected"),
    [
        ({"phase": "generate"}, 3, "phase must be 'prefill' or 'decode'"),
        ({"num_seqs": -4}, 3, "num_seqs must be >= 1"),
        ({"length": 0}, 3, "length must be >= 1"),
        ({"tp": "two"}, 3, "invalid literal"),
        ({"seconds": "fast"}, 3, "could not convert"),
        ({"seconds": -0.1}, 3, "seconds must be a positive number"),
        ({"seconds": "nan"}, 3, "seconds must be a positive number"),
        ({"model": "gpt-5"}, 3, "unknown model 'gpt-5'"),
        ({"gpu": "b300"}, 3, "unknown GPU type 'b300'"),
    ],
)
def test_read_points_errors_name_file_and_line(tmp_path: Path, bad: dict, line: int, expected: str) -> None:
    path = write_points(tmp_path / "points.csv", [GOOD, {**GOOD, **bad}, GOOD])
    with pytest.raises(CalibrationError, match=rf"points\.csv:{line}: .*{expected}"):
        read_points(path)


def test_read_points_missing_column(tmp_path: Path) -> None:
    columns = [c for c in POINT_COLUMNS if c != "phase"]
    with pytest.raises(CalibrationError, match=r"points\.csv: missing columns \['phase'\]"):
        read_points(write_points(tmp_path / "points.csv", [GOOD], columns))


def test_read_points_missing_seconds_only_matters_for_fitting(tmp_path: Path) -> None:
    columns = [c for c in POINT_COLUMNS if c != "seconds"]
    path = write_points(tmp_path / "points.csv", [GOOD], columns)
    with pytest.raises(CalibrationError, match="missing columns \\['seconds'\\]"):
        read_points(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, "points file not found"),
        ("", "not a readable CSV"),
        (",".join(POINT_COLUMNS) + "\n", "no rows"),
    ],
)
def test_read_points_unreadable(tmp_path: Path, text: str | None, expected: str) -> None:
    path = tmp_path / "points.csv"
    if text is not None:
        path.write_text(text)
    with pytest.raises(CalibrationError, match=expected):
        read_points(path)


def test_fit_keeps_the_stack_factors_it_does_not_fit() -> None:
    """Fitting on the Vidur calibration leaves its NCCL launch cost per all-reduce in place."""
    from oserve.perf.fit import _N_PARAMS, _with_factors

    base = builtin_calibration("vidur")
    start = base.for_gpu(get_gpu("h100")).stack
    assert start.allreduce_launch_s > 0
    fitted = _with_factors(base, H100, np.zeros(_N_PARAMS)).for_gpu(get_gpu("h100")).stack
    assert fitted == start

"""``oserve perf``: show, calibrate, fit and predict from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from factories import write_points
from oserve.cli import perf_cmd
from oserve.cli.main import main
from oserve.perf import Calibration, builtin_calibration
from oserve.perf.fit import POINT_COLUMNS, predict_points, read_points
from oserve.perf.ops import GEMM_OPS
from oserve.spec import get_gpu


@pytest.fixture
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """Render tables wide enough that cells are not truncated (the captured stream is not a terminal)."""
    monkeypatch.setattr(perf_cmd, "console", Console(width=250))


def _assert_error(capsys: pytest.CaptureFixture[str], *expected: str) -> str:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    assert captured.err.startswith("error: ")
    flat = captured.err.replace("\n", " ")
    for text in expected:
        assert text in flat
    return flat


# -- show -----------------------------------------------------------------------------------------------------------


def test_show_default(wide, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["perf", "show"]) == 0
    out = capsys.readouterr().out
    assert "llama-3-8b on H100-SXM-80GB" in out
    for label in ("tp1", "tp2", "tp4", "tp8"):
        assert f" {label} " in out
    assert "does not fit" not in out


def test_show_model_that_does_not_fit_on_one_gpu(wide, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["perf", "show", "-m", "meta-llama/Llama-2-70b-hf", "-g", "a100", "--tp", "1,8", "--pp", "2"])
        == 0
    )
    out = capsys.readouterr().out
    assert "tp1pp2" in out and "tp8pp2" in out
    assert out.count("does not fit") == 1


def test_show_with_calibration_file(wide, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    builtin_calibration().save(path)
    assert main(["perf", "show", "-c", str(path), "--tp", "2"]) == 0
    assert " tp2 " in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--model", "gpt-5"], "unknown model 'gpt-5'"),
        (["--gpu", "b300"], "unknown GPU type 'b300'"),
        (["--tp", "3"], "tp must be a power of two"),
        (["-c", "absent.json"], "calibration file not found"),
    ],
)
def test_show_bad_input_exits_1(capsys: pytest.CaptureFixture[str], argv: list[str], expected: str) -> None:
    assert main(["perf", "show", *argv]) == 1
    _assert_error(capsys, expected)


@pytest.mark.parametrize("argv", [["--tp", "x"], ["--tp", "1,two"]])
def test_show_non_integer_tp_is_a_clean_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    assert main(["perf", "show", *argv]) != 0
    assert "Traceback" not in capsys.readouterr().err


def test_show_pp_zero_is_a_usage_error() -> None:
    assert main(["perf", "show", "--pp", "0"]) == 2


# -- calibrate --------------------------------------------------------------------------------------------------------


def test_calibrate_shared_profiles(
    capsys: pytest.CaptureFixture[str], shared_profiles: Path, tmp_path: Path
) -> None:
    out_path = tmp_path / "calib.json"
    assert main(["perf", "calibrate", "--profiles", str(shared_profiles), "-o", str(out_path)]) == 0
    assert f"wrote {out_path}" in capsys.readouterr().out.replace("\n", "")
    written, shipped = Calibration.load(out_path), builtin_calibration("vidur")
    for key in ("h100", "a100"):
        for op in GEMM_OPS:
            got, want = written.families[key].gemm_compute_eff[op], shipped.families[key].gemm_compute_eff[op]
            assert got == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("profiles", ["absent-folder", "empty-folder"])
def test_calibrate_without_profiles_exits_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, profiles: str
) -> None:
    (tmp_path / "empty-folder").mkdir()
    assert (
        main(["perf", "calibrate", "--profiles", str(tmp_path / profiles), "-o", str(tmp_path / "c.json")])
        == 1
    )
    _assert_error(capsys)
    assert not (tmp_path / "c.json").exists()


# -- fit and predict ----------------------------------------------------------------------------------------------------

ROWS = [
    ("prefill", 1, 128),
    ("prefill", 1, 2048),
    ("prefill", 4, 1024),
    ("decode", 1, 256),
    ("decode", 16, 1024),
    ("decode", 128, 2048),
]


def _rows(tp: int = 1) -> list[dict]:
    return [
        {"model": "llama-3-8b", "gpu": "h100", "tp": tp, "pp": 1, "phase": p, "num_seqs": n, "length": length}
        for p, n, length in ROWS
    ]


def test_fit_then_predict_round_trip(wide, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # 'measurements' 30% slower than the built-in model predicts
    base = predict_points(pd.DataFrame(_rows()))
    points = [{**row, "seconds": 1.3 * s} for row, s in zip(_rows(), base["predicted_seconds"], strict=True)]
    points_csv = write_points(tmp_path / "points.csv", points, list(POINT_COLUMNS))
    calib = tmp_path / "calib.json"
    assert main(["perf", "fit", str(points_csv), "-o", str(calib)]) == 0
    out = capsys.readouterr().out
    assert "fitted on 6 points" in out and "H100-SXM-80GB" in out and "MAPE on the points" in out
    fitted = Calibration.load(calib)
    assert set(fitted.per_gpu) == {get_gpu("h100").name}

    query = [*_rows(1), *_rows(2), *_rows(4)]
    query_csv = write_points(tmp_path / "query.csv", query, [c for c in POINT_COLUMNS if c != "seconds"])
    out_csv = tmp_path / "out.csv"
    assert main(["perf", "predict", str(query_csv), "-c", str(calib), "-o", str(out_csv)]) == 0
    assert f"predicted {len(query)} rows" in capsys.readouterr().out
    result = pd.read_csv(out_csv)
    assert len(result) == len(query)
    assert result["predicted_seconds"].notna().all() and (result["predicted_seconds"] > 0).all()
    expected = predict_points(read_points(query_csv, need_seconds=False), fitted)["predicted_seconds"]
    assert result["predicted_seconds"].to_numpy() == pytest.approx(expected.to_numpy(), rel=1e-9)
    # the fit moved TP1 predictions onto the 'measurements'
    tp1 = result["predicted_seconds"].to_numpy()[: len(ROWS)]
    assert tp1 == pytest.approx(1.3 * base["predicted_seconds"].to_numpy(), rel=0.05)


def test_predict_reports_mape_against_seconds_column(
    wide, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rows = _rows()
    rows[0]["seconds"] = 1.0  # one measured row, the rest blank
    query_csv = write_points(tmp_path / "query.csv", rows, list(POINT_COLUMNS))
    out_csv = tmp_path / "out.csv"
    assert main(["perf", "predict", str(query_csv), "-o", str(out_csv)]) == 0
    assert "MAPE against the seconds column" in capsys.readouterr().out
    assert len(pd.read_csv(out_csv)) == len(rows)


def test_fit_bad_points_exits_1_naming_file_and_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rows = [{**row, "seconds": 0.01} for row in _rows()]
    rows[2]["phase"] = "warmup"
    points_csv = write_points(tmp_path / "points.csv", rows, list(POINT_COLUMNS))
    assert main(["perf", "fit", str(points_csv), "-o", str(tmp_path / "c.json")]) == 1
    _assert_error(capsys, "points.csv:4:", "phase must be 'prefill' or 'decode'")
    assert not (tmp_path / "c.json").exists()


def test_fit_without_seconds_exits_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    points_csv = write_points(tmp_path / "points.csv", _rows(), [c for c in POINT_COLUMNS if c != "seconds"])
    assert main(["perf", "fit", str(points_csv), "-o", str(tmp_path / "c.json")]) == 1
    _assert_error(capsys, "missing columns ['seconds']")


def test_predict_with_invalid_calibration_exits_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    query_csv = write_points(tmp_path / "query.csv", _rows(), [c for c in POINT_COLUMNS if c != "seconds"])
    bad = tmp_path / "calib.json"
    bad.write_text(json.dumps({"note": "no families"}))
    assert main(["perf", "predict", str(query_csv), "-c", str(bad), "-o", str(tmp_path / "o.csv")]) == 1
    _assert_error(capsys, "families")

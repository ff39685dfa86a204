"""``oserve forecast`` end to end on a real trace window, and its bad-input exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oserve.cli.main import main
from oserve.trace import load_trace, window


@pytest.fixture(scope="module")
def conv_window(shared_traces: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 10 minutes of the Azure conversation hour as a plain CSV."""
    trace = window(load_trace(shared_traces / "azure_conv_2023.csv"), 0.0, 600.0)
    return trace.to_csv(tmp_path_factory.mktemp("fc") / "conv10.csv")


def test_forecast_prints_tables_writes_json_and_plot(conv_window: Path, tmp_path: Path, capsys) -> None:
    js, png = tmp_path / "f.json", tmp_path / "f.png"
    rc = main(
        ["forecast", "--trace", str(conv_window), "--window", "60", "--horizon", "120", "--train", "240",
         "--refit", "0", "--forecasters", "last,ewma:alpha=0.5,holt-winters", "--json", str(js),
         "--plot", str(png)]
    )  # fmt: skip
    assert rc == 0
    out = capsys.readouterr().out
    assert "sMAPE %" in out and "MAPE %" in out and "*best" in out and "ewma:alpha=0.5" in out
    doc = json.loads(js.read_text())
    assert doc["bin_s"] == 10.0 and len(doc["types"]) == 6
    names = [r["forecaster"] for r in doc["results"]]
    assert names == ["last", "ewma:alpha=0.5", "holt-winters"] and doc["best"] in names
    first = doc["results"][0]
    assert (
        first["history_windows"] == 6
        and first["horizon_windows"] == 12
        and first["origins"] == int(load_trace(conv_window).duration_s // 10) - 24 - 12 + 1
    )
    assert set(first["per_type"]) == set(doc["types"]) and 0 <= first["overall"]["smape_pct"] <= 200
    best = min(doc["results"], key=lambda r: r["overall"]["smape_pct"])
    assert doc["best"] == best["forecaster"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--window", "5"], 2, "shorter than one --bin"),
        (["--horizon", "25"], 2, "not a multiple of --bin"),
        (["--rank", "rmse"], 2, "choose one of smape, mape, mae"),
        (["--train", "0", "--window", "300", "--horizon", "600"], 1, "needs 900 s"),
        (["--forecasters", "last,prophet"], 1, "unknown forecaster 'prophet'; choose one of last, ewma"),
        (["--forecasters", "ewma:beta=1"], 1, "has no parameter beta"),
    ],
)
def test_bad_input_exit_codes(conv_window: Path, capsys, args: list[str], code: int, message: str) -> None:
    assert main(["forecast", "--trace", str(conv_window), "--forecasters", "last", *args]) == code
    assert message in " ".join(capsys.readouterr().err.split())

"""``oserve spec``: models, gpus, cluster — exit codes and what they print."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from oserve.cli import spec_cmd
from oserve.cli.main import main
from oserve.spec import list_gpus, list_models


@pytest.fixture
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """Render tables wide enough that cells are not truncated (the captured stream is not a terminal)."""
    monkeypatch.setattr(spec_cmd, "console", Console(width=250))


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    assert captured.err.startswith("error: ")
    return captured.err


def test_models_lists_every_model(wide, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["spec", "models"]) == 0
    out = capsys.readouterr().out
    for name in list_models():
        assert f" {name} " in out
    assert "meta-llama/Llama-2-70b-hf" in out and "2/8" in out  # HF id; Mixtral's experts


def test_gpus_lists_every_gpu(wide, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["spec", "gpus"]) == 0
    out = capsys.readouterr().out
    for name in list_gpus():
        assert name in out
    assert "PCIe" in out and "989" in out  # L40S/A10G have no NVLink; H100 bf16 TFLOP/s


@pytest.mark.parametrize(
    ("spec", "summary"),
    [("2x8xH100", "16 GPUs, $110.40/hour"), ("1x8xA100-80GB+2x4xL40S", "16 GPUs, $44.80/hour")],
)
def test_cluster_compact(wide, capsys: pytest.CaptureFixture[str], spec: str, summary: str) -> None:
    assert main(["spec", "cluster", spec]) == 0
    out = capsys.readouterr().out
    assert summary in out


def test_cluster_yaml(wide, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("name: lab\nnodes:\n  - {gpu: l40s, count: 4, num_nodes: 2, price_per_hour: 1.5}\n")
    assert main(["spec", "cluster", str(path)]) == 0
    out = capsys.readouterr().out
    assert "cluster lab" in out and "pcie" in out and "8 GPUs, $12.00/hour" in out


@pytest.mark.parametrize("spec", ["2x", "0x8xH100", "2x8x", "x8xH100", "missing.yaml"])
def test_cluster_bad_input_exits_1(capsys: pytest.CaptureFixture[str], spec: str) -> None:
    assert main(["spec", "cluster", spec]) == 1
    _error_line(capsys)


def test_short_error_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["spec", "cluster", "0x8xH100"]) == 1
    err = _error_line(capsys)
    assert err.count("\n") == 1 and "node and GPU counts must be at least 1" in err


def test_long_error_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["spec", "cluster", "1x8xB300"]) == 1
    assert _error_line(capsys).count("\n") == 1


def test_models_output_is_readable_when_piped(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["spec", "models"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in list_models())


@pytest.mark.parametrize("argv", [["spec", "nope"], ["spec", "cluster"], ["spec", "models", "--bogus"]])
def test_usage_errors_exit_2_without_traceback(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    assert main(argv) == 2


@pytest.mark.parametrize(
    ("name", "context"),
    [
        ("llama-3.1-8b", 131072),
        ("llama-3.1-70b", 131072),
        ("qwen2.5-7b", 32768),
        ("qwen2.5-72b", 32768),
        ("mixtral-8x7b", 32768),
        ("llama-2-70b", 4096),
    ],
)
def test_models_show_context_length(
    wide, capsys: pytest.CaptureFixture[str], name: str, context: int
) -> None:
    assert main(["spec", "models"]) == 0
    out = capsys.readouterr().out
    assert "context" in out
    row = next(line for line in out.splitlines() if f" {name} " in line)
    assert f" {context} " in row

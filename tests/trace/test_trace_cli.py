"""``oserve trace`` commands, run through the real entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from factories import make_trace
from oserve.cli.main import main
from oserve.trace import load_trace


@pytest.fixture
def trace_file(tmp_path: Path) -> Path:
    return make_trace(2000, rate_rps=5.0, seed=1, name="t").to_csv(tmp_path / "t.csv")


def test_stats_prints_tables_and_writes_json_and_png(
    trace_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png, js = tmp_path / "t.png", tmp_path / "t.json"
    assert (
        main(
            [
                "trace",
                "stats",
                str(trace_file),
                "--window",
                "60",
                "--types",
                "4",
                "--plot",
                str(png),
                "--json",
                str(js),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    for title in ("request lengths", "request types (4)", "per 60 s window", "type mix per window"):
        assert title in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    doc = json.loads(js.read_text())
    assert doc["trace"]["num_requests"] == 2000 and len(doc["workload"]["types"]) == 4
    assert len(doc["series"]["rates_rps"]) == len(doc["windows"])


def test_stats_with_explicit_edges(trace_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "trace",
                "stats",
                str(trace_file),
                "--prompt-edges",
                "500,2000",
                "--output-edges",
                "100",
                "--format",
                "plain",
            ]
        )
        == 0
    )
    assert "p[500,2000),o>=100" in capsys.readouterr().out


def test_stats_real_conv(shared_traces: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trace", "stats", str(shared_traces / "azure_conv_2023.csv")]) == 0
    out = capsys.readouterr().out
    assert "19,366 requests" in out and "1,155" in out


def test_bad_file_exits_1_with_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2024-01-01 00:00:00,1,2\n2024-01-01 00:00:01,x,2\n"
    )
    assert main(["trace", "stats", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:3:" in err.replace("\n", "") and "ContextTokens" in err


def test_bad_edges_exit_1(trace_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trace", "stats", str(trace_file), "--prompt-edges", "10,x"]) == 1
    assert "--prompt-edges" in capsys.readouterr().err


def test_burstgpt_drop_warning_printed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "b.csv"
    path.write_text(
        "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
        "0,ChatGPT,10,5,15,x\n1,ChatGPT,10,0,10,x\n2,GPT-4,20,7,27,x\n"
    )
    assert main(["trace", "stats", str(path)]) == 0
    assert "dropped 1 of 3 rows" in capsys.readouterr().out


def test_convert_window_scale(trace_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.parquet"
    assert (
        main(
            [
                "trace",
                "convert",
                str(trace_file),
                str(out),
                "--start",
                "50",
                "--end",
                "250",
                "--scale",
                "2",
                "--seed",
                "3",
                "--max-model-len",
                "2048",
            ]
        )
        == 0
    )
    t = load_trace(out)
    assert t.duration_s == pytest.approx(200.0, abs=1.0) and t.rate_rps == pytest.approx(10.0, rel=0.15)
    assert (t.prompt_tokens + t.output_tokens).max() <= 2048


@pytest.mark.parametrize("mode", [["--phase", "60"], ["--weights", "1,0.5"], ["--concat"]])
def test_mix(trace_file: Path, tmp_path: Path, mode: list[str]) -> None:
    other = make_trace(1000, rate_rps=2.0, seed=2).to_csv(tmp_path / "u.csv")
    out = tmp_path / "m.csv"
    assert main(["trace", "mix", str(trace_file), str(other), "-o", str(out), *mode]) == 0
    assert len(load_trace(out)) > 0


def test_mix_needs_one_mode(trace_file: Path) -> None:
    assert main(["trace", "mix", str(trace_file), str(trace_file), "-o", "x.csv"]) == 1


def test_stats_of_a_trace_with_block_hashes_gives_the_prefix_bound(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [[1, 2, 3], [1, 2, 4], [5]]  # 6 of 7 distinct; blocks 1, 2 hit again: 2 of 7 blocks
    lines = [
        json.dumps(
            {"timestamp": 1000 * i, "input_length": 512 * len(ids), "output_length": 4, "hash_ids": ids}
        )
        for i, ids in enumerate(rows)
    ]
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "s.json"
    assert main(["trace", "stats", str(path), "--json", str(out)]) == 0
    assert "5 distinct of 7" in capsys.readouterr().out
    prefix = json.loads(out.read_text())["prefix"]
    # by tokens: the second prompt's first two blocks (1,024 of its 1,536 tokens) over 3,584 prompt tokens
    assert prefix["block_hit_rate"] == pytest.approx(2 / 7)
    assert prefix["token_hit_rate"] == pytest.approx(1024 / 3584)

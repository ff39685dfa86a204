"""Loaders: every supported format, auto-detection, and malformed files naming file and line."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from oserve.errors import TraceError
from oserve.trace import detect_format, load_trace

AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
BURST_HEADER = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    if name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _mooncake_line(ts_ms: float, inp: int, out: int, ids: list[int]) -> str:
    return json.dumps({"timestamp": ts_ms, "input_length": inp, "output_length": out, "hash_ids": ids}) + "\n"


# --- real files ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "rows", "mean_in", "mean_out", "rate"),
    [
        ("azure_code_2023.csv", 8_819, 2_048, 28, 2.6),
        ("azure_conv_2023.csv", 19_366, 1_155, 211, 5.5),
    ],
)
def test_real_azure_2023(
    shared_traces: Path, name: str, rows: int, mean_in: float, mean_out: float, rate: float
) -> None:
    t = load_trace(shared_traces / name)
    assert len(t) == rows
    assert t.report.format == "azure" and t.report.rows_read == rows and not t.report.warnings
    assert t.arrival_s[0] == 0.0 and np.all(np.diff(t.arrival_s) >= 0)
    assert t.prompt_tokens.mean() == pytest.approx(mean_in, rel=0.01)
    assert t.output_tokens.mean() == pytest.approx(mean_out, rel=0.02)
    assert t.rate_rps == pytest.approx(rate, rel=0.05)
    assert "2023-11-16" in t.report.origin


def test_azure_2023_seven_fractional_digits(tmp_path: Path) -> None:
    p = _write(
        tmp_path,
        "a.csv",
        AZURE_HEADER + "2023-11-16 18:17:03.9799600,4808,10\n2023-11-16 18:17:04.0319600,3180,8\n",
    )
    t = load_trace(p)
    assert t.arrival_s.tolist() == pytest.approx([0.0, 0.052])


def test_azure_2024_iso_timestamps(tmp_path: Path) -> None:
    p = _write(
        tmp_path,
        "AzureLLMInferenceTrace_code_1week.csv",
        AZURE_HEADER + "2024-05-10T00:00:00.0123456Z,10,2\n2024-05-10 00:00:01.5123456+00:00,100,20\n"
        "2024-05-10T02:00:01.5123456+02:00,7,1\n",
    )
    t = load_trace(p)
    assert t.report.format == "azure"
    assert t.arrival_s.tolist() == pytest.approx([0.0, 1.5, 1.5])
    assert t.name == "AzureLLMInferenceTrace_code_1week"


def test_mooncake_jsonl(tmp_path: Path) -> None:
    lines = [
        _mooncake_line(0, 6955, 52, [0, 1, 2]),
        _mooncake_line(3052, 6472, 26, [0, 5]),
        _mooncake_line(3052, 700, 1, []),
    ]
    t = load_trace(_write(tmp_path, "mooncake_trace.jsonl", "".join(lines)))
    assert t.report.format == "mooncake"
    assert t.arrival_s.tolist() == [0.0, 3.052, 3.052]
    assert t.prompt_tokens.tolist() == [6955, 6472, 700]
    assert [h.tolist() for h in t.extras["hash_ids"]] == [[0, 1, 2], [0, 5], []]


def test_burstgpt_drops_failed_and_reports(tmp_path: Path) -> None:
    text = BURST_HEADER + (
        "5,ChatGPT,472,18,490,Conversation log\n45,ChatGPT,1087,0,1087,Conversation log\n"
        "118,GPT-4,417,276,693,API log\n120,GPT-4,10,0,10,API log\n"
    )
    t = load_trace(_write(tmp_path, "BurstGPT_1.csv", text))
    assert t.report.format == "burstgpt"
    assert len(t) == 2 and t.report.rows_read == 4 and t.report.num_dropped == 2
    assert any("dropped 2 of 4" in w for w in t.report.warnings)
    assert t.arrival_s.tolist() == [5.0, 118.0]  # relative times kept as in the file
    assert t.extras["Model"].tolist() == ["ChatGPT", "GPT-4"]
    assert t.extras["Log Type"].tolist() == ["Conversation log", "API log"]


def test_plain_csv_and_alias(tmp_path: Path) -> None:
    t = load_trace(_write(tmp_path, "p.csv", "arrival_s,prompt_tokens,output_tokens\n0,5,6\n1.25,7,8\n"))
    assert t.report.format == "plain" and t.arrival_s.tolist() == [0.0, 1.25]


def test_unsorted_file_is_sorted_and_reported(tmp_path: Path) -> None:
    t = load_trace(_write(tmp_path, "p.csv", "arrival_s,input_tokens,output_tokens\n2,1,1\n1,2,2\n3,3,3\n"))
    assert t.arrival_s.tolist() == [1.0, 2.0, 3.0] and t.prompt_tokens.tolist() == [2, 1, 3]
    assert t.report.resorted and any("sorted" in w for w in t.report.warnings)


@pytest.mark.parametrize("name", ["m.jsonl.gz", "a.csv.gz", "no_suffix_but_gzip"])
def test_gzip(tmp_path: Path, name: str) -> None:
    text = _mooncake_line(0, 1, 2, [1]) if "jsonl" in name else AZURE_HEADER + "2024-01-01 00:00:00,1,2\n"
    path = tmp_path / name
    with gzip.open(path, "wt") as f:
        f.write(text)
    assert len(load_trace(path)) == 1


def test_blank_lines_are_skipped(tmp_path: Path) -> None:
    t = load_trace(_write(tmp_path, "p.csv", "arrival_s,input_tokens,output_tokens\n0,1,1\n\n2,3,3\n"))
    assert len(t) == 2


@pytest.mark.parametrize(
    ("text", "fmt"),
    [
        (AZURE_HEADER, "azure"),
        (BURST_HEADER, "burstgpt"),
        ("arrival_s,input_tokens,output_tokens\n", "plain"),
        (_mooncake_line(0, 1, 1, []), "mooncake"),
        ('"TIMESTAMP","ContextTokens","GeneratedTokens"\n', "azure"),
        ("\ufeffTIMESTAMP, ContextTokens ,GeneratedTokens\n", "azure"),
    ],
)
def test_detect_format(tmp_path: Path, text: str, fmt: str) -> None:
    assert detect_format(_write(tmp_path, "f.txt", text)).name == fmt


# --- malformed input: file and line in the message --------------------------------------------

MALFORMED = [
    # (id, file name, content, line, fragment of the message)
    (
        "non-numeric count",
        "a.csv",
        AZURE_HEADER + "2024-01-01 00:00:00,1,2\n2024-01-01 00:00:01,x,2\n",
        3,
        "ContextTokens",
    ),
    (
        "negative count",
        "a.csv",
        AZURE_HEADER + "2024-01-01 00:00:00,1,2\n\n2024-01-01 00:00:01,5,-2\n",
        4,
        "GeneratedTokens",
    ),
    ("fractional count", "p.csv", "arrival_s,input_tokens,output_tokens\n0,1.5,2\n", 2, "input_tokens"),
    (
        "missing field",
        "a.csv",
        AZURE_HEADER + "2024-01-01 00:00:00,1,2\n2024-01-01 00:00:01,1\n",
        3,
        "fields",
    ),
    ("extra field", "a.csv", AZURE_HEADER + "2024-01-01 00:00:00,1,2,9\n", 2, "fields"),
    ("empty value", "a.csv", AZURE_HEADER + "2024-01-01 00:00:00,,2\n", 2, "missing"),
    (
        "bad timestamp",
        "a.csv",
        AZURE_HEADER + "2024-01-01 00:00:00,1,2\n2024-13-45 99:00:00,1,2\n",
        3,
        "TIMESTAMP",
    ),
    ("negative seconds", "p.csv", "arrival_s,input_tokens,output_tokens\n0,1,1\n-3,1,1\n", 3, "arrival_s"),
    ("nan seconds", "b.csv", BURST_HEADER + "1,m,1,1,2,x\nnan,m,1,1,2,x\n", 3, "Timestamp"),
    ("bad json", "m.jsonl", _mooncake_line(0, 1, 1, []) + '{"timestamp": 1, "input_length": \n', 2, "JSON"),
    (
        "json missing key",
        "m.jsonl",
        _mooncake_line(0, 1, 1, []) * 2 + '{"timestamp": 1, "output_length": 1}\n',
        3,
        "input_length",
    ),
    (
        "json float count",
        "m.jsonl",
        _mooncake_line(0, 1, 1, []) + _mooncake_line(5, 2.5, 1, []),
        2,  # type: ignore[arg-type]
        "input_length",
    ),
    (
        "json string time",
        "m.jsonl",
        _mooncake_line(0, 1, 1, []) + _mooncake_line("soon", 2, 1, []),
        2,  # type: ignore[arg-type]
        "timestamp",
    ),
    (
        "json bad hash ids",
        "m.jsonl",
        _mooncake_line(0, 1, 1, []) + _mooncake_line(1, 2, 1, ["a"]),
        2,  # type: ignore[list-item]
        "hash_ids",
    ),
    ("json not an object", "m.jsonl", _mooncake_line(0, 1, 1, []) + "[1, 2]\n", 2, "object"),
    (
        "json nested 5,000 deep",  # pyarrow's reader crashed the process (SIGSEGV) on it
        "m.jsonl",
        _mooncake_line(0, 1, 1, []) + '{"timestamp": 1, "x": ' + "[" * 5000 + "]" * 5000 + "}\n",
        2,
        "nested deeper than 64",
    ),
    ("json first line nested", "m.jsonl", "{" + '"a": {' * 5000 + "}" * 5001 + "\n", 1, "nested too deeply"),
    (
        "arrival beyond a year",
        "p.csv",
        "arrival_s,input_tokens,output_tokens\n0,1,1\n1e9,1,1\n",
        3,
        "366 days",
    ),
    (
        "token count beyond any context",
        "p.csv",
        "arrival_s,input_tokens,output_tokens\n0,1,1\n1,99999999999,1\n",
        3,
        "at most 67,108,864 tokens",
    ),
    (
        "azure span beyond a year",
        "a.csv",
        AZURE_HEADER + "2020-01-01 00:00:00,1,2\n2024-01-01 00:00:01,1,2\n",
        3,
        "366 days of the earliest",
    ),
    ("not utf-8", "p.csv", "arrival_s,input_tokens,output_tokens\n0,1,1\n", 3, "UTF-8"),
    (
        "gzip bad line",
        "a.csv.gz",
        AZURE_HEADER + "2024-01-01 00:00:00,1,2\n2024-01-01 00:00:01,-1,2\n",
        3,
        "ContextTokens",
    ),
]


@pytest.mark.parametrize(
    ("name", "text", "line", "fragment"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed_names_file_and_line(
    tmp_path: Path, name: str, text: str, line: int, fragment: str
) -> None:
    path = _write(tmp_path, name, text)
    if "UTF-8" in fragment:
        path.write_bytes(path.read_bytes() + b"1,\xff\xfe,2\n")
    with pytest.raises(TraceError) as info:
        load_trace(path)
    err = info.value
    assert err.path == str(path) and err.line == line, str(err)
    assert f"{path}:{line}:" in str(err) and fragment in str(err)


@pytest.mark.parametrize(
    ("text", "fragment", "line"),
    [
        ("", "empty file", None),
        (AZURE_HEADER, "no requests", None),
        ("a,b,c\n1,2,3\n", "supported formats: azure", 1),
        ('{"ts": 1}\n', "supported formats", 1),
        (BURST_HEADER + "1,m,5,0,5,x\n", "all 1 rows were dropped", None),
    ],
)
def test_unloadable_files(tmp_path: Path, text: str, fragment: str, line: int | None) -> None:
    with pytest.raises(TraceError, match=fragment) as info:
        load_trace(_write(tmp_path, "f.csv", text))
    assert info.value.line == line


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="no such file"):
        load_trace(tmp_path / "nope.csv")


def test_explicit_format_mismatch(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.csv", AZURE_HEADER + "2024-01-01 00:00:00,1,2\n")
    with pytest.raises(TraceError, match="header lacks"):
        load_trace(path, format="burstgpt")
    with pytest.raises(TraceError, match="does not look like format 'mooncake'"):
        load_trace(path, format="mooncake")
    with pytest.raises(TraceError, match="unknown trace format"):
        load_trace(path, format="nope")
    assert len(load_trace(path, format="azure")) == 1

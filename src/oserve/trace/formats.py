"""Trace file formats OServe reads, and auto-detection from a file's first line (header or JSON keys)."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from oserve.errors import TraceError

__all__ = [
    "FORMATS",
    "TraceFormat",
    "detect_format",
    "format_names",
    "get_format",
    "is_gzip",
    "open_binary",
    "read_header",
    "split_header",
]

TimeKind = Literal["datetime", "seconds", "ms"]


@dataclass(frozen=True, slots=True)
class TraceFormat:
    """One supported file layout: where arrival time, prompt and output lengths live, and in what units."""

    name: str
    container: Literal["csv", "jsonl"]
    time_column: str
    time_kind: TimeKind  # datetime: wall clock (ISO 8601); seconds / ms: relative to the trace start
    prompt_column: str
    output_column: str
    description: str
    prompt_aliases: tuple[str, ...] = ()
    list_columns: tuple[str, ...] = ()  # columns holding lists of ints (prefix block hashes)
    drop_zero_output: bool = False  # rows with 0 output tokens are failed requests, dropped and reported

    @property
    def required(self) -> tuple[str, str, str]:
        return (self.time_column, self.prompt_column, self.output_column)


FORMATS: dict[str, TraceFormat] = {
    f.name: f
    for f in (
        TraceFormat(
            "azure",
            "csv",
            "TIMESTAMP",
            "datetime",
            "ContextTokens",
            "GeneratedTokens",
            "Azure LLM inference trace 2023 / 2024 one-week: TIMESTAMP,ContextTokens,GeneratedTokens",
        ),
        TraceFormat(
            "mooncake",
            "jsonl",
            "timestamp",
            "ms",
            "input_length",
            "output_length",
            'Mooncake FAST\'25 JSON lines: {"timestamp": ms, "input_length", "output_length", "hash_ids"}',
            list_columns=("hash_ids",),
        ),
        TraceFormat(
            "burstgpt",
            "csv",
            "Timestamp",
            "seconds",
            "Request tokens",
            "Response tokens",
            "BurstGPT CSV: Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type",
            drop_zero_output=True,
        ),
        TraceFormat(
            "plain",
            "csv",
            "arrival_s",
            "seconds",
            "input_tokens",
            "output_tokens",
            "plain CSV (or .parquet): arrival_s,input_tokens,output_tokens[,extra columns]",
            prompt_aliases=("prompt_tokens",),
            list_columns=("hash_ids",),
        ),
    )
}


def format_names() -> list[str]:
    return list(FORMATS)


def _supported() -> str:
    return "; ".join(f"{f.name}: {f.description}" for f in FORMATS.values())


def is_gzip(path: Path) -> bool:
    """Whether the file starts with the gzip magic bytes (the name is not trusted)."""
    with open(path, "rb") as probe:
        return probe.read(2) == b"\x1f\x8b"


def open_binary(path: Path) -> BinaryIO:
    """Open a file for reading bytes, decompressing gzip."""
    return gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")  # type: ignore[return-value]


def read_header(path: Path) -> str:
    """The file's first line, decoded and stripped (BOM removed). Raises ``TraceError`` for empty files."""
    try:
        with open_binary(path) as f:
            raw = f.readline(1 << 20)
    except FileNotFoundError as exc:
        raise TraceError("no such file", path=str(path)) from exc
    except (OSError, EOFError) as exc:  # unreadable, or a truncated / corrupt gzip stream
        raise TraceError(f"cannot read: {exc}", path=str(path)) from exc
    if not raw.strip():
        raise TraceError(
            "empty file" if not raw else "first line is blank; expected a header or a JSON object",
            path=str(path),
            line=None if not raw else 1,
        )
    try:
        return raw.decode("utf-8-sig").strip()
    except UnicodeDecodeError as exc:
        raise TraceError("not UTF-8 text", path=str(path), line=1) from exc


def split_header(line: str) -> list[str]:
    """CSV header names, stripped of whitespace and quotes."""
    return [name.strip().strip('"').strip() for name in line.split(",")]


def _matches(fmt: TraceFormat, names: set[str]) -> bool:
    prompt_ok = fmt.prompt_column in names or any(a in names for a in fmt.prompt_aliases)
    return prompt_ok and fmt.time_column in names and fmt.output_column in names


def detect_format(path: str | Path) -> TraceFormat:
    """Pick the format from the first line: JSON keys for JSON lines, column names for CSV; ``.parquet``
    files are the plain format. Raises ``TraceError`` listing the supported formats when nothing matches."""
    path = Path(path)
    if path.suffix == ".parquet":
        return FORMATS["plain"]
    first = read_header(path)
    if first.startswith("{"):
        try:
            keys = set(json.loads(first))
        except RecursionError:
            raise TraceError(
                "first line is nested too deeply to be a trace record", path=str(path), line=1
            ) from None
        except (ValueError, TypeError) as exc:
            raise TraceError(f"first line is not a JSON object ({exc})", path=str(path), line=1) from exc
        fmt = FORMATS["mooncake"]
        if _matches(fmt, keys):
            return fmt
        raise TraceError(
            f"unrecognised JSON keys {sorted(keys)}; supported formats: {_supported()}",
            path=str(path),
            line=1,
        )
    names = set(split_header(first))
    for fmt in FORMATS.values():
        if fmt.container == "csv" and _matches(fmt, names):
            return fmt
    shown = first if len(first) <= 120 else first[:117] + "..."
    raise TraceError(
        f"unrecognised header {shown!r}; supported formats: {_supported()}", path=str(path), line=1
    )


def get_format(name: str) -> TraceFormat:
    """A format by name (``azure``, ``mooncake``, ``burstgpt``, ``plain``); unknown names list the valid ones."""
    try:
        return FORMATS[name.lower()]
    except KeyError:
        raise TraceError(f"unknown trace format {name!r}; known: auto, {', '.join(FORMATS)}") from None

"""Line-by-line readers used only after the columnar fast path fails: they name the offending line.

Each either raises ``TraceError(path=, line=)`` at the first bad line or returns the columns with their
line numbers, so a file that only the fast parser disliked still loads fully.
"""

from __future__ import annotations

import csv
import json
import math
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from oserve.errors import TraceError
from oserve.files import MAX_NESTING, bracket_depth
from oserve.trace.convert import RawColumns
from oserve.trace.formats import TraceFormat, open_binary

__all__ = ["MAX_JSON_DEPTH", "json_depth", "read_csv_slow", "read_jsonl_slow"]

_READ_ERRORS = (OSError, EOFError, zlib.error)  # gzip.BadGzipFile is an OSError
# A trace record is flat; deep nesting is an attack or a broken file. Deeper than this, pyarrow's JSON reader
# builds a type as deep, whose destructor overflows the C stack (a JSON line nested 5,000 deep: SIGSEGV).
MAX_JSON_DEPTH = MAX_NESTING
json_depth = bracket_depth


def _decoded_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) for every line; raises ``TraceError`` on undecodable bytes or a corrupt file."""
    lineno = 0
    try:
        with open_binary(path) as f:
            for lineno, raw in enumerate(f, start=1):
                try:
                    text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
                except UnicodeDecodeError as exc:
                    raise TraceError("not UTF-8 text", path=str(path), line=lineno) from exc
                yield lineno, text
    except _READ_ERRORS as exc:
        raise TraceError(f"cannot read: {exc}", path=str(path), line=lineno + 1) from exc


def read_csv_slow(path: Path, fmt: TraceFormat, names: list[str], prompt_column: str) -> RawColumns:
    """Parse a CSV with the stdlib reader, checking the field count of every line."""
    width = len(names)
    cols: list[list[str]] = [[] for _ in names]
    lines: list[int] = []
    numbered = _decoded_lines(path)
    current = [0]

    def texts() -> Iterator[str]:
        for lineno, text in numbered:
            current[0] = lineno
            yield text

    reader = csv.reader(texts())
    try:
        next(reader, None)  # header, already checked
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != width:
                raise TraceError(
                    f"expected {width} fields ({', '.join(names)}), got {len(row)}",
                    path=str(path),
                    line=current[0],
                )
            for j, value in enumerate(row):
                cols[j].append(value)
            lines.append(current[0])
    except csv.Error as exc:
        raise TraceError(f"malformed CSV: {exc}", path=str(path), line=current[0]) from exc
    by_name = dict(zip(names, cols, strict=True))
    core = {fmt.time_column, prompt_column, fmt.output_column}
    return RawColumns(
        time=by_name[fmt.time_column],
        prompt=by_name[prompt_column],
        output=by_name[fmt.output_column],
        extras={k: v for k, v in by_name.items() if k not in core},
        lines=np.asarray(lines, dtype=np.int64),
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def read_jsonl_slow(path: Path, fmt: TraceFormat) -> RawColumns:
    """Parse JSON lines one at a time, checking each object's required fields and their types."""
    core = fmt.required
    cols: dict[str, list[Any]] = {k: [] for k in core}
    extras: dict[str, list[Any]] = {}
    lines: list[int] = []
    for lineno, text in _decoded_lines(path):
        if not text.strip():
            continue

        def bad(message: str, lineno: int = lineno) -> TraceError:
            return TraceError(message, path=str(path), line=lineno)

        if (
            text.count("[") + text.count("{") > MAX_JSON_DEPTH
            and json_depth(text.encode())[0] > MAX_JSON_DEPTH
        ):
            raise bad(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        try:
            obj = json.loads(text)
        except RecursionError:
            raise bad(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
        except ValueError as exc:
            raise bad(f"bad JSON: {exc.msg if isinstance(exc, json.JSONDecodeError) else exc}") from exc
        if not isinstance(obj, dict):
            raise bad(f"expected a JSON object, got {type(obj).__name__}")
        missing = [k for k in core if k not in obj]
        if missing:
            raise bad(f"missing field{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}")
        t = obj[fmt.time_column]
        if not _is_number(t) or t < 0:
            raise bad(f"{fmt.time_column}: {t!r} is not a finite, non-negative number")
        for key in (fmt.prompt_column, fmt.output_column):
            v = obj[key]
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise bad(f"{key}: {v!r} is not a non-negative integer")
        for key in fmt.list_columns:
            v = obj.get(key)
            if v is not None and (
                not isinstance(v, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in v)
            ):
                raise bad(f"{key}: expected a list of integers")
        n = len(lines)
        for key in core:
            cols[key].append(obj[key])
        for key, value in obj.items():
            if key not in core:
                extras.setdefault(key, [None] * n).append(value)
        for col in extras.values():
            if len(col) == n:
                col.append(None)
        lines.append(lineno)
    return RawColumns(
        time=cols[fmt.time_column],
        prompt=cols[fmt.prompt_column],
        output=cols[fmt.output_column],
        extras=extras,
        lines=np.asarray(lines, dtype=np.int64),
    )

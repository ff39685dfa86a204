"""``load_trace``: read any supported trace file into a ``Trace``, columnar on the happy path.

Fast path: pyarrow's CSV / JSON readers and vectorised checks. If anything fails, the slow path re-reads
the file line by line to name the first bad line (``TraceError(path=, line=)``); a file loads fully or raises.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json

from oserve.errors import TraceError
from oserve.trace.convert import BadRow, RawColumns, build_trace
from oserve.trace.core import PLAIN_COLUMNS, Trace
from oserve.trace.formats import (
    TraceFormat,
    detect_format,
    get_format,
    is_gzip,
    open_binary,
    read_header,
    split_header,
)
from oserve.trace.slowpath import MAX_JSON_DEPTH, json_depth, read_csv_slow, read_jsonl_slow

__all__ = ["load_trace"]

_BLOCK_BYTES = 16 << 20  # pyarrow block size: a JSON line must fit in one block


def _stem(path: Path) -> str:
    name = path.name.removesuffix(".gz")
    return Path(name).stem


def _stream(path: Path) -> pa.NativeFile:
    return pa.input_stream(str(path), compression="gzip" if is_gzip(path) else None)


def _csv_columns(path: Path, fmt: TraceFormat) -> tuple[list[str], str]:
    """Header names and the prompt column actually used; raises when required columns are missing."""
    names = split_header(read_header(path))
    prompt = next((c for c in (fmt.prompt_column, *fmt.prompt_aliases) if c in names), fmt.prompt_column)
    missing = [c for c in (fmt.time_column, prompt, fmt.output_column) if c not in names]
    if missing:
        raise TraceError(
            f"header lacks {', '.join(map(repr, missing))} required by format {fmt.name!r} "
            f"({fmt.description})",
            path=str(path),
            line=1,
        )
    dupes = sorted({c for c in names if names.count(c) > 1})
    if dupes:
        raise TraceError(f"duplicate columns in header: {', '.join(dupes)}", path=str(path), line=1)
    return names, prompt


def _read_csv_fast(path: Path, fmt: TraceFormat, names: list[str], prompt: str) -> RawColumns:
    types = {c: pa.string() for c in names}
    types[prompt] = types[fmt.output_column] = pa.int64()
    if fmt.time_kind != "datetime":
        types[fmt.time_column] = pa.float64()
    table = pa_csv.read_csv(
        _stream(path),
        read_options=pa_csv.ReadOptions(column_names=names, skip_rows=1, block_size=_BLOCK_BYTES),
        convert_options=pa_csv.ConvertOptions(column_types=types, strings_can_be_null=False),
    )
    core = {fmt.time_column, prompt, fmt.output_column}
    return RawColumns(
        time=table[fmt.time_column].to_pandas(),
        prompt=table[prompt].to_pandas(),
        output=table[fmt.output_column].to_pandas(),
        extras={c: _arrow_extra(table[c]) for c in names if c not in core},
    )


def _arrow_extra(col: pa.ChunkedArray) -> np.ndarray:
    """An extra CSV column as int64 or float64 when every value parses, else an object array of strings."""
    for typ in (pa.int64(), pa.float64()):
        try:
            return col.cast(typ).to_numpy()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    return col.to_numpy(zero_copy_only=False)


def _read_jsonl_fast(path: Path, fmt: TraceFormat) -> RawColumns:
    schema = pa.schema(
        [
            (fmt.time_column, pa.float64()),
            (fmt.prompt_column, pa.int64()),
            (fmt.output_column, pa.int64()),
            *((c, pa.list_(pa.int64())) for c in fmt.list_columns),
        ]
    )
    table = pa_json.read_json(
        _stream(path),
        read_options=pa_json.ReadOptions(block_size=_BLOCK_BYTES),
        parse_options=pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer"),
    )
    core = set(fmt.required)
    extras = {
        c: table[c].to_numpy(zero_copy_only=False)
        for c in table.column_names
        if c not in core and not (c in fmt.list_columns and table[c].null_count == len(table))
    }
    return RawColumns(
        time=table[fmt.time_column].to_pandas(),
        prompt=table[fmt.prompt_column].to_pandas(),
        output=table[fmt.output_column].to_pandas(),
        extras=extras,
    )


def _load_parquet(path: Path, fmt: TraceFormat, name: str) -> Trace:
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise TraceError(f"cannot read Parquet: {exc}", path=str(path)) from exc
    prompt = next((c for c in (fmt.prompt_column, *fmt.prompt_aliases) if c in frame.columns), None)
    if prompt is None or fmt.time_column not in frame.columns or fmt.output_column not in frame.columns:
        raise TraceError(
            f"Parquet columns {list(frame.columns)} lack the plain format's {', '.join(PLAIN_COLUMNS)}",
            path=str(path),
        )
    core = {fmt.time_column, prompt, fmt.output_column}
    raw = RawColumns(
        time=frame[fmt.time_column],
        prompt=frame[prompt],
        output=frame[fmt.output_column],
        extras={c: frame[c].to_numpy() for c in frame.columns if c not in core},
    )
    try:
        return _finish(build_trace(raw, fmt, str(path), name=name), path)
    except BadRow as bad:
        raise TraceError(f"row {bad.index + 1}: {bad.message}", path=str(path)) from None


def _finish(trace: Trace, path: Path) -> Trace:
    if len(trace) == 0:
        if trace.report.rows_read:
            raise TraceError(
                f"all {trace.report.rows_read:,} rows were dropped ({'; '.join(trace.report.warnings)})",
                path=str(path),
            )
        raise TraceError("no requests in the file (only a header?)", path=str(path))
    return trace


def load_trace(path: str | Path, *, format: str | None = None, name: str | None = None) -> Trace:
    """Load a trace file (gzip allowed), detecting its format from the first line unless ``format`` is given.

    Formats: ``azure`` (2023 and 2024), ``mooncake``, ``burstgpt``, ``plain`` (CSV or ``.parquet``). Wall-clock
    times are measured from the earliest request; relative times are kept as in the file. Unsorted files
    are sorted; BurstGPT's failed requests are dropped. Both are recorded in ``trace.report``.
    Raises ``TraceError`` naming the file and line of the first malformed row.
    """
    path = Path(path)
    if not path.is_file():
        raise TraceError("no such file" if not path.exists() else "not a file", path=str(path))
    fmt = detect_format(path) if format in (None, "", "auto") else get_format(format)
    name = _stem(path) if name is None else name
    if path.suffix == ".parquet":
        return _load_parquet(path, fmt, name)
    if fmt.container == "jsonl" and read_header(path).startswith("{"):
        if _too_deep(path):  # never hand pyarrow a deeply nested line (it crashes); the slow path names it
            slow = lambda: read_jsonl_slow(path, fmt)  # noqa: E731
            return _load_with_fallback(path, fmt, name, slow, slow)
        return _load_with_fallback(
            path, fmt, name, lambda: _read_jsonl_fast(path, fmt), lambda: read_jsonl_slow(path, fmt)
        )
    if fmt.container == "csv" and not read_header(path).startswith("{"):
        names, prompt = _csv_columns(path, fmt)
        return _load_with_fallback(
            path,
            fmt,
            name,
            lambda: _read_csv_fast(path, fmt, names, prompt),
            lambda: read_csv_slow(path, fmt, names, prompt),
        )
    raise TraceError(
        f"file does not look like format {fmt.name!r} ({fmt.description})", path=str(path), line=1
    )


def _too_deep(path: Path) -> bool:
    """Whether some JSON line may nest deeper than ``MAX_JSON_DEPTH`` (a columnar scan, 16 MB at a time)."""
    depth = 0
    try:
        with open_binary(path) as f:
            while block := f.read(_BLOCK_BYTES):
                deepest, depth = json_depth(block, depth)
                if deepest > MAX_JSON_DEPTH:
                    return True
    except (OSError, EOFError, zlib.error):
        return True  # unreadable: the slow path names the line
    return False


def _load_with_fallback(
    path: Path, fmt: TraceFormat, name: str, fast: Callable[[], RawColumns], slow: Callable[[], RawColumns]
) -> Trace:
    try:
        raw = fast()
        trace = build_trace(raw, fmt, str(path), name=name)
    except TraceError:
        raise
    except Exception:  # any fast-path failure (parser or check) is diagnosed line by line
        raw = slow()
    else:
        return _finish(trace, path)
    try:
        return _finish(build_trace(raw, fmt, str(path), name=name), path)
    except BadRow as bad:
        line = int(raw.lines[bad.index]) if raw.lines is not None else None
        raise TraceError(bad.message, path=str(path), line=line) from None

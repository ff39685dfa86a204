"""Reading the project's small structured files (JSON / YAML) and finding the shared reference data.

One place turns every way a file can be unreadable (missing, a folder, no permission, not text, bad syntax) into
the caller's ``OServeError`` subclass naming the file.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from oserve.errors import OServeError

__all__ = ["MAX_NESTING", "bracket_depth", "read_structured", "shared_data_dir"]

#: deeper bracket nesting than this is refused before parsing: no file OServe reads nests past ~5 levels, and the
#: pure-Python YAML parser takes ~2 s (holding the GIL) to fail on 5,000 nested brackets
MAX_NESTING = 64
_STEP = np.zeros(256, dtype=np.int8)
_STEP[[ord("["), ord("{")]] = 1
_STEP[[ord("]"), ord("}")]] = -1


class _Loader(yaml.SafeLoader):
    """YAML 1.1's safe loader, reading numbers as YAML 1.2 (and JSON) do: ``1e-3`` and ``5e-324``, written
    without a dot, are floats, not strings."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def bracket_depth(data: bytes, start: int = 0) -> tuple[int, int]:
    """(deepest ``[``/``{`` nesting reached, nesting at the end) over ``data``, from nesting ``start``; brackets in
    strings count too, so it over-estimates, never under-estimates. Vectorised: ~10 ms per MB."""
    if not data:
        return start, start
    depth = np.cumsum(_STEP[np.frombuffer(data, dtype=np.uint8)], dtype=np.int64) + start
    return int(depth.max()), int(depth[-1])


def read_structured(
    path: Path | str, *, what: str, error: type[OServeError], syntax: Literal["json", "yaml"] | None = None
) -> Any:
    """Parse a JSON or YAML file (``syntax``; by default JSON for a ``.json`` name, else YAML, which reads JSON
    too); failures raise ``error`` with the file named."""
    path = Path(path)
    if syntax is None:
        syntax = "json" if path.suffix.lower() == ".json" else "yaml"
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise error(f"{what} not found: {path}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read {what}: {exc}") from exc
    if bracket_depth(text.encode("utf-8", "surrogatepass"))[0] > MAX_NESTING:
        raise error(f"{path}: {what} is nested too deeply (more than {MAX_NESTING} levels)")
    try:
        return json.loads(text) if syntax == "json" else yaml.load(text, Loader=_Loader)  # a SafeLoader
    except json.JSONDecodeError as exc:
        raise error(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML/JSON: {exc}") from exc
    except RecursionError:
        raise error(f"{path}: {what} is nested too deeply") from None


def shared_data_dir() -> Path | None:
    """``$OSERVE_DATA``, else the ``shared/data`` folder beside the checkout (or beside the working directory)."""
    env = os.environ.get("OSERVE_DATA")
    if env and Path(env).is_dir():
        return Path(env)
    for parent in [*Path(__file__).resolve().parents, Path.cwd()]:
        candidate = parent.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return None

"""``RequestGrid``: the request-type grid a deployment's routing weights are keyed by.

Prompt and output length edges (tokens); ``(len(prompt_edges)+1) x (len(output_edges)+1)`` types. The value the
deployment file carries; ``trace.classify.TypeGrid`` adds the typing of requests on top of the same edges.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from oserve.errors import SpecError

__all__ = ["EDGE_KEYS", "MAX_EDGES", "MAX_EDGE_TOKENS", "RequestGrid"]

EDGE_KEYS = ("prompt_edges", "output_edges")
MAX_EDGES = 64
MAX_EDGE_TOKENS = 1 << 24


@dataclass(frozen=True, slots=True)
class RequestGrid:
    """Strictly increasing token-count edges >= 1 for prompt and output length."""

    prompt_edges: tuple[int, ...] = ()
    output_edges: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for key in EDGE_KEYS:
            values = getattr(self, key)
            if not isinstance(values, tuple):
                raise SpecError(f"{key} must be a tuple of token counts, got {type(values).__name__}")
            _check(list(values), key)

    @classmethod
    def of(cls, grid: Any) -> RequestGrid:
        """The edges of anything with ``prompt_edges`` and ``output_edges`` (a ``TypeGrid``)."""
        return cls(tuple(int(e) for e in grid.prompt_edges), tuple(int(e) for e in grid.output_edges))

    def to_dict(self) -> dict[str, list[int]]:
        return {"prompt_edges": list(self.prompt_edges), "output_edges": list(self.output_edges)}

    @classmethod
    def from_dict(cls, data: Any, where: str = "type_edges") -> RequestGrid:
        """Strict: a mapping of ``prompt_edges`` / ``output_edges`` lists of integers (``1.9`` is not ``1``).
        ``types`` (the names older files carry, derived from the edges) is accepted and ignored."""
        if not isinstance(data, dict):
            raise SpecError(f"{where} must be a mapping of {' and '.join(EDGE_KEYS)}")
        unknown = sorted(str(k) for k in data if k not in (*EDGE_KEYS, "types"))
        if unknown:
            raise SpecError(f"{where}: unknown keys {unknown}; expected {', '.join(EDGE_KEYS)}")
        if "types" in data:
            types = data["types"]
            if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
                raise SpecError(f"{where}.types must be a list of type names")
        edges = {}
        for key in EDGE_KEYS:
            values = data.get(key, [])
            if not isinstance(values, list):
                raise SpecError(f"{where}.{key} must be a list of at most {MAX_EDGES} token counts")
            edges[key] = tuple(_check(values, f"{where}.{key}"))
        return cls(**edges)


def _check(values: list[Any], where: str) -> list[int]:
    if len(values) > MAX_EDGES:
        raise SpecError(f"{where} must be a list of at most {MAX_EDGES} token counts")
    for k, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int):
            raise SpecError(f"{where}[{k}] must be an integer, got {v!r:.40}")
        if not 1 <= v <= MAX_EDGE_TOKENS:
            raise SpecError(f"{where}[{k}] must be in 1..{MAX_EDGE_TOKENS}, got {v}")
    if any(b <= a for a, b in itertools.pairwise(values)):
        raise SpecError(f"{where} must be strictly increasing, got {values}")
    return values

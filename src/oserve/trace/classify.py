"""Request types: buckets over (prompt length, output length), and classifiers for traces and live traffic.

A ``TypeGrid`` cuts prompt and output lengths at edges (half-open bins ``[lo, hi)``); type index is
``prompt_bin * num_output_bins + output_bin``. A trace replay may classify by true output lengths; live
traffic does not know them, so ``LiveClassifier`` uses ``max_tokens`` capped by a per-prompt-bin estimate, and
``OnlineClassifier`` (the gateway's, and the simulator's by default) learns that estimate from the completions.
"""

from __future__ import annotations

import itertools
import math
import statistics
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from oserve.errors import ConfigError
from oserve.spec.grid import RequestGrid
from oserve.trace.core import Trace

__all__ = [
    "DEFAULT_NUM_TYPES",
    "DEFAULT_OUTPUT_ESTIMATE_TOKENS",
    "LONG_PROMPT_TOKENS",
    "LiveClassifier",
    "OnlineClassifier",
    "RequestType",
    "TypeGrid",
    "classify",
]

DEFAULT_NUM_TYPES = 6  # 3 prompt bins x 2 output bins
#: prompts of at least this many tokens get a prompt bucket of their own when a trace has enough of them (long
#: context: 16k is 4x the Azure traces' p99 and below the Mooncake trace's p60), so quantiles over the rest do not
#: lump them with 800-token prompts
LONG_PROMPT_TOKENS = 16384
LONG_PROMPT_SHARE = 0.005  # ... at least this share of the requests (and not nearly all of them)


@dataclass(frozen=True, slots=True)
class RequestType:
    """One bucket: prompt tokens in ``[prompt_min, prompt_max)`` and output tokens likewise (None = no bound)."""

    index: int
    name: str  # e.g. "p<1000,o[100,400)"
    short: str  # e.g. "p0o1"
    prompt_min_tokens: int
    prompt_max_tokens: int | None
    output_min_tokens: int
    output_max_tokens: int | None


def _bin_label(prefix: str, lo: int, hi: int | None) -> str:
    if lo == 0 and hi is None:
        return f"{prefix}:any"
    if lo == 0:
        return f"{prefix}<{hi}"
    return f"{prefix}>={lo}" if hi is None else f"{prefix}[{lo},{hi})"


def _check_edges(kind: str, edges: tuple[int, ...]) -> None:
    if any(e <= 0 for e in edges) or any(b <= a for a, b in itertools.pairwise(edges)):
        raise ConfigError(f"{kind} edges must be positive and strictly increasing, got {list(edges)}")


def _nice(x: float) -> int:
    """Round to two significant digits (1534 -> 1500) so edges read well; at least 1."""
    if x < 1:
        return 1
    digits = math.floor(math.log10(x)) + 1
    return max(1, round(x, -(digits - 2)) if digits > 2 else round(x))


def _split(num_types: int) -> tuple[int, int]:
    """(prompt bins, output bins) with product ``num_types``, as square as possible, prompt side larger."""
    out = max(d for d in range(1, math.isqrt(num_types) + 1) if num_types % d == 0)
    return num_types // out, out


@dataclass(frozen=True, slots=True)
class TypeGrid:
    """Prompt and output length edges (tokens) defining ``(len(prompt_edges)+1) x (len(output_edges)+1)`` types."""

    prompt_edges: tuple[int, ...] = ()
    output_edges: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompt_edges", tuple(int(e) for e in self.prompt_edges))
        object.__setattr__(self, "output_edges", tuple(int(e) for e in self.output_edges))
        _check_edges("prompt", self.prompt_edges)
        _check_edges("output", self.output_edges)

    @classmethod
    def from_quantiles(
        cls,
        trace: Trace,
        *,
        prompt_bins: int = 3,
        output_bins: int = 2,
        long_prompt_tokens: int | None = LONG_PROMPT_TOKENS,
    ) -> TypeGrid:
        """Edges at the trace's equal-count quantiles, rounded to two significant digits.

        Ties (many equal lengths) can merge bins, giving fewer types than asked. When at least
        ``LONG_PROMPT_SHARE`` of the prompts (and not all but that share) reach ``long_prompt_tokens``, those get
        one more prompt bucket of their own and the prompt quantiles are taken over the shorter ones (None: plain
        quantiles).
        """
        if prompt_bins < 1 or output_bins < 1:
            raise ConfigError("need at least one prompt bin and one output bin")
        if len(trace) == 0:
            return cls()

        def edges(values: np.ndarray, bins: int) -> tuple[int, ...]:
            qs = np.quantile(values, np.arange(1, bins) / bins) if bins > 1 else np.zeros(0)
            nice = sorted({_nice(float(q)) for q in qs})
            return tuple(e for e in nice if e > int(values.min()))

        prompts, long_edge = trace.prompt_tokens, ()
        if long_prompt_tokens is not None:
            long = prompts >= long_prompt_tokens
            if LONG_PROMPT_SHARE <= float(long.mean()) <= 1 - LONG_PROMPT_SHARE:
                prompts, long_edge = prompts[~long], (int(long_prompt_tokens),)
        short = tuple(e for e in edges(prompts, prompt_bins) if not long_edge or e < long_edge[0])
        return cls(short + long_edge, edges(trace.output_tokens, output_bins))

    @classmethod
    def for_types(cls, trace: Trace, num_types: int = DEFAULT_NUM_TYPES) -> TypeGrid:
        """A quantile grid with about ``num_types`` types (factored as prompt bins x output bins)."""
        if num_types < 1:
            raise ConfigError(f"number of types must be >= 1, got {num_types}")
        prompt_bins, output_bins = _split(num_types)
        return cls.from_quantiles(trace, prompt_bins=prompt_bins, output_bins=output_bins)

    @property
    def num_prompt_bins(self) -> int:
        return len(self.prompt_edges) + 1

    @property
    def num_output_bins(self) -> int:
        return len(self.output_edges) + 1

    @property
    def num_types(self) -> int:
        return self.num_prompt_bins * self.num_output_bins

    @property
    def types(self) -> tuple[RequestType, ...]:
        p_bounds = list(zip((0, *self.prompt_edges), (*self.prompt_edges, None), strict=True))
        o_bounds = list(zip((0, *self.output_edges), (*self.output_edges, None), strict=True))
        return tuple(
            RequestType(
                i * self.num_output_bins + j,
                f"{_bin_label('p', plo, phi)},{_bin_label('o', olo, ohi)}",
                f"p{i}o{j}",
                plo,
                phi,
                olo,
                ohi,
            )
            for i, (plo, phi) in enumerate(p_bounds)
            for j, (olo, ohi) in enumerate(o_bounds)
        )

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.types]

    def prompt_bin(self, prompt_tokens: Any) -> np.ndarray:
        return np.searchsorted(np.asarray(self.prompt_edges, dtype=np.int64), prompt_tokens, side="right")

    def classify_lengths(self, prompt_tokens: Any, output_tokens: Any) -> np.ndarray:
        """Type index (int64) for each (prompt, output) length pair."""
        out_bin = np.searchsorted(np.asarray(self.output_edges, dtype=np.int64), output_tokens, side="right")
        return (self.prompt_bin(prompt_tokens) * self.num_output_bins + out_bin).astype(np.int64)

    def classify(self, trace: Trace) -> np.ndarray:
        """Type index of every request, by its true lengths (a replay that says so may use them)."""
        return self.classify_lengths(trace.prompt_tokens, trace.output_tokens)

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt_edges": list(self.prompt_edges),
            "output_edges": list(self.output_edges),
            "types": self.names,
        }

    @classmethod
    def from_edges(cls, edges: RequestGrid) -> TypeGrid:
        """The grid of a deployment's ``type_edges``."""
        return cls(edges.prompt_edges, edges.output_edges)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TypeGrid:
        try:
            return cls(tuple(data.get("prompt_edges", ())), tuple(data.get("output_edges", ())))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"bad type grid {data!r}: {exc}") from exc


def classify(trace: Trace, grid: TypeGrid) -> np.ndarray:
    """Type index of every request in ``trace`` under ``grid`` (vectorised)."""
    return grid.classify(trace)


@dataclass(frozen=True, slots=True)
class LiveClassifier:
    """Types live requests, whose output length is unknown, from prompt tokens and ``max_tokens``.

    The output side uses ``min(max_tokens, estimate)``, where the estimate is a per-prompt-bin quantile of
    output lengths seen in a reference trace (``fit``); a missing ``max_tokens`` (None, NaN or <= 0) uses
    the estimate alone. A learned per-request estimate can replace it later.
    """

    grid: TypeGrid
    output_estimate_tokens: tuple[float, ...]  # one per prompt bin

    def __post_init__(self) -> None:
        if len(self.output_estimate_tokens) != self.grid.num_prompt_bins:
            raise ConfigError(
                f"need {self.grid.num_prompt_bins} output estimates (one per prompt bin), "
                f"got {len(self.output_estimate_tokens)}"
            )

    @classmethod
    def fit(cls, trace: Trace, grid: TypeGrid, *, quantile: float = 0.5) -> LiveClassifier:
        """Estimate output length per prompt bin as the ``quantile`` of the trace's outputs in that bin."""
        bins = grid.prompt_bin(trace.prompt_tokens)
        overall = float(np.quantile(trace.output_tokens, quantile)) if len(trace) else 0.0
        est = tuple(
            float(np.quantile(trace.output_tokens[bins == b], quantile)) if np.any(bins == b) else overall
            for b in range(grid.num_prompt_bins)
        )
        return cls(grid, est)

    def estimate_output_tokens(self, prompt_tokens: Any, max_tokens: Any = None) -> np.ndarray:
        """Output-length guess (tokens) per request."""
        prompt = np.atleast_1d(np.asarray(prompt_tokens, dtype=np.int64))
        est = np.asarray(self.output_estimate_tokens, dtype=np.float64)[self.grid.prompt_bin(prompt)]
        if max_tokens is None:
            return est
        cap = np.broadcast_to(np.asarray(max_tokens, dtype=np.float64), est.shape)
        known = np.isfinite(cap) & (cap > 0)
        return np.where(known, np.minimum(cap, est), est)

    def classify(self, prompt_tokens: Any, max_tokens: Any = None) -> np.ndarray:
        """Type index per request from prompt tokens and ``max_tokens`` (arrays or scalars)."""
        prompt = np.atleast_1d(np.asarray(prompt_tokens, dtype=np.int64))
        return self.grid.classify_lengths(prompt, self.estimate_output_tokens(prompt, max_tokens))


DEFAULT_OUTPUT_ESTIMATE_TOKENS = (
    256.0  # before any completion is seen (the emulated engine's default max_tokens)
)


class OnlineClassifier:
    """Type index and expected output tokens of a request; ``observe()`` the output of each completion and the
    per-prompt-bin estimate becomes the median of the last ``window`` outputs of that bin (refit every
    ``refit_every`` observations of the bin, so the hot path stays one lookup)."""

    def __init__(
        self,
        grid: TypeGrid,
        seed: LiveClassifier | None = None,
        *,
        window: int = 512,
        refit_every: int = 32,
    ) -> None:
        self.grid = grid
        self.live = seed or LiveClassifier(grid, (DEFAULT_OUTPUT_ESTIMATE_TOKENS,) * grid.num_prompt_bins)
        self._recent: list[deque[int]] = [deque(maxlen=window) for _ in range(grid.num_prompt_bins)]
        self._since_fit = [0] * grid.num_prompt_bins
        self.refit_every = refit_every
        self._prompt_edges = grid.prompt_edges
        self._output_edges = grid.output_edges
        self._num_output_bins = grid.num_output_bins
        self._estimates = self.live.output_estimate_tokens

    @property
    def num_types(self) -> int:
        return self.grid.num_types

    def classify(self, prompt_tokens: int, max_tokens: int | None) -> tuple[int, float]:
        """(type index, expected output tokens) for one request: ``LiveClassifier.classify`` and
        ``estimate_output_tokens`` for a scalar, with bisect in place of numpy (22 us -> 1 us; the tests check
        they agree)."""
        b = bisect_right(self._prompt_edges, prompt_tokens)
        est = self._estimates[b]
        if max_tokens is not None and 0 < max_tokens < est:
            est = float(max_tokens)
        return b * self._num_output_bins + bisect_right(self._output_edges, est), est

    def observe(self, prompt_tokens: int, output_tokens: int) -> None:
        """Learn from one finished request's true output length."""
        b = bisect_right(self._prompt_edges, prompt_tokens)  # TypeGrid.prompt_bin for a scalar
        self._recent[b].append(output_tokens)
        self._since_fit[b] += 1
        if self._since_fit[b] >= self.refit_every:
            self._since_fit[b] = 0
            est = list(self.live.output_estimate_tokens)
            est[b] = float(statistics.median(self._recent[b]))  # np.median's value, without an array
            self.live = LiveClassifier(self.grid, tuple(est))
            self._estimates = self.live.output_estimate_tokens

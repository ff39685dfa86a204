"""``Requests``: the per-request state the engines of one run share, as plain lists indexed by request id."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Requests"]


@dataclass(slots=True)
class Requests:
    """Per-request state shared by the engines of a run (plain lists indexed by request id)."""

    prompt: list[int]
    goal: list[int]  # prompt + output tokens (output at least 1)
    generated: list[int] = field(default_factory=list)  # tokens sampled so far, kept across preemption
    first_token_s: list[float] = field(default_factory=list)
    finish_s: list[float] = field(default_factory=list)
    preemptions: list[int] = field(default_factory=list)
    cached: list[int] = field(
        default_factory=list
    )  # prefix-cache hit tokens at first admission (-1: not yet)
    hashes: list[Sequence[int]] | None = None  # each prompt's block hashes (None: the requests carry none)

    @classmethod
    def of(
        cls, prompt: np.ndarray, output: np.ndarray, hashes: Sequence[Sequence[int]] | None = None
    ) -> Requests:
        n = len(prompt)
        p = np.maximum(prompt, 1).astype(np.int64)
        g = p + np.maximum(output, 1)
        nan = [math.nan] * n
        ids = None if hashes is None else [[int(h) for h in row] for row in hashes]
        return cls(p.tolist(), g.tolist(), [0] * n, nan, list(nan), [0] * n, [-1] * n, ids)

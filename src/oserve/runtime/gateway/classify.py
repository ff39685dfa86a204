"""Typing live requests: the project's ``OnlineClassifier`` (prompt tokens and ``max_tokens`` capped by a
per-prompt-bin output estimate learned online from the completions the gateway sees), shared with the simulator
(``oserve.trace.classify``)."""

from __future__ import annotations

from oserve.trace.classify import DEFAULT_OUTPUT_ESTIMATE_TOKENS, OnlineClassifier

__all__ = ["DEFAULT_OUTPUT_ESTIMATE_TOKENS", "OnlineClassifier"]

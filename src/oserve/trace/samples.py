"""Where the reference traces live, and stand-ins when they are not on this machine.

The real Azure 2023 hours sit in ``../shared/data/traces`` beside a checkout (or wherever ``OSERVE_DATA`` points).
Away from them, :func:`demo_traces` draws synthetic hours whose arrival rates and length means / p99s match the
measured character of those files (Poisson arrivals, log-normal lengths), and says so.
"""

from __future__ import annotations

import math

import numpy as np

from oserve.files import shared_data_dir
from oserve.trace.core import Trace
from oserve.trace.loaders import load_trace

__all__ = ["demo_traces", "long_demo_traces", "synthetic_trace"]

_Z99 = 2.3263  # standard normal 99th percentile


def _lognormal(rng: np.random.Generator, mean: float, p99: float, n: int) -> np.ndarray:
    """Log-normal samples with the given mean and 99th percentile (tokens, at least 1)."""
    gap = math.log(p99 / mean)
    sigma = _Z99 - math.sqrt(max(_Z99**2 - 2 * gap, 0.0))
    mu = math.log(mean) - sigma**2 / 2
    return np.maximum(1, np.rint(rng.lognormal(mu, sigma, n))).astype(np.int64)


def synthetic_trace(
    rate_rps: float,
    prompt_mean: float,
    prompt_p99: float,
    output_mean: float,
    output_p99: float,
    *,
    duration_s: float = 3600.0,
    seed: int = 0,
    name: str = "synthetic",
) -> Trace:
    """Poisson arrivals at ``rate_rps`` with log-normal prompt and output lengths of the given mean and p99."""
    rng = np.random.default_rng(seed)
    n = int(rng.poisson(rate_rps * duration_s))
    arrivals = np.sort(rng.uniform(0.0, duration_s, n))
    return Trace.from_arrays(
        arrivals,
        _lognormal(rng, prompt_mean, prompt_p99, n),
        _lognormal(rng, output_mean, output_p99, n),
        duration_s=duration_s,
        name=name,
        source="synthetic",
    )


def demo_traces(seed: int = 0) -> tuple[Trace, Trace, str]:
    """The Azure 2023 code and conversation hours, or synthetic stand-ins; and a note saying which."""
    root = shared_data_dir()
    if root is not None:
        code, conv = root / "traces" / "azure_code_2023.csv", root / "traces" / "azure_conv_2023.csv"
        if code.is_file() and conv.is_file():
            return load_trace(code), load_trace(conv), f"Azure LLM inference traces 2023, {root / 'traces'}"
    # Character measured on those files (../shared/data/README.md); output p99 for code is not given there.
    code_t = synthetic_trace(2.6, 2048, 7436, 28, 200, seed=seed, name="synthetic azure_code_2023")
    conv_t = synthetic_trace(5.5, 1155, 4142, 211, 601, seed=seed + 1, name="synthetic azure_conv_2023")
    return code_t, conv_t, "synthetic stand-ins for the Azure 2023 hours (../shared/data not found)"


def long_demo_traces(seed: int = 0) -> tuple[Trace, Trace, str]:
    """The Mooncake synthetic trace (long documents) and the Azure 2023 conversation hour, or synthetic stand-ins
    (measured on those files: Mooncake 3.9 req/s over 1,022 s, prompt mean 15,325 / p99 66,456 tokens, output
    mean 149 / p99 768); and a note saying which."""
    root = shared_data_dir()
    if root is not None:
        mooncake, conv = root / "traces" / "mooncake_synthetic.jsonl", root / "traces" / "azure_conv_2023.csv"
        if mooncake.is_file() and conv.is_file():
            return (
                load_trace(mooncake),
                load_trace(conv),
                f"Mooncake synthetic + Azure conversation 2023, {root / 'traces'}",
            )
    long_t = synthetic_trace(
        3.9, 15325, 66456, 149, 768, duration_s=1022.0, seed=seed, name="synthetic mooncake_synthetic"
    )
    # the conversation hour runs at about 3.8 req/s in its first minutes (5.5 over the hour): the demo's window
    conv_t = synthetic_trace(3.8, 1155, 4142, 211, 601, seed=seed + 1, name="synthetic azure_conv_2023")
    return (
        long_t,
        conv_t,
        "synthetic stand-ins for Mooncake and the Azure conversation hour (../shared/data not found)",
    )

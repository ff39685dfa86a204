"""A small PyTorch LSTM forecaster: one network shared by every type, trained on sliding windows on the CPU.

Each sample is one type's ``lookback_windows`` rates and the next window's, both divided by the input's mean
plus the type's mean over the training data (so one network serves a 0.1 and a 10 req/s type, a level shift
is mostly a new scale, and a near-empty input of a bursty type does not blow the target up). Training is
full-batch Adam from weights drawn with a seeded ``torch.Generator``: the same data and seed give the same
network. Forecasts feed each predicted window back in. torch is imported only when the forecaster is used.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from oserve.adapt.forecast.base import check_history, check_steps, ewma_level
from oserve.errors import ConfigError

__all__ = ["LstmForecaster"]

_BLOWUP = 10.0
_INSTALL = "the lstm forecaster needs PyTorch; install the profile extra: pip install 'oserve[profile]'"


def _torch() -> Any:
    """Import torch lazily, translating its absence into a clear OServe error."""
    try:
        import torch
    except ImportError as exc:
        raise ConfigError(_INSTALL) from exc
    return torch


@contextmanager
def _one_thread(torch: Any) -> Iterator[None]:
    """Run torch on one intra-op thread, restoring the caller's setting: the tensors are tiny, and on a
    shared 2-core machine two threads made training 3-10x slower and its wall time erratic."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _scale(x: np.ndarray, type_mean: np.ndarray, axis: int) -> np.ndarray:
    """Mean along ``axis`` plus the type's long-run mean; 1 where both are 0 (an all-zero input stays zero)."""
    s = x.mean(axis=axis, keepdims=True) + type_mean
    return np.where(s > 0, s, 1.0)


def sliding_samples(rates_rps: np.ndarray, lookback_windows: int) -> tuple[np.ndarray, np.ndarray]:
    """Every type's ``(lookback, next)`` pairs, scaled (see the module doc): inputs (n, lookback), targets (n,)."""
    windows = rates_rps.shape[0]
    if windows <= lookback_windows:
        return np.empty((0, lookback_windows)), np.empty(0)
    views = np.lib.stride_tricks.sliding_window_view(rates_rps, lookback_windows + 1, axis=0)
    w = views.transpose(1, 0, 2).reshape(-1, lookback_windows + 1)  # type-major, each row one window
    x, y = w[:, :-1], w[:, -1]
    type_mean = np.repeat(rates_rps.mean(axis=0), windows - lookback_windows)[:, None]
    s = _scale(x, type_mean, axis=1)
    return x / s, y / s[:, 0]


class LstmForecaster:
    """LSTM(1 -> ``hidden``) + linear head, one step ahead, rolled forward for longer horizons.

    Not fitted, it trains on the first history it is given; with fewer than ``min_samples`` training
    windows (summed over types) it stays untrained and forecasts EWMA (counted in ``fallbacks``), as it does
    for a type whose forecast is non-finite or above 10x the history's peak. A type whose last
    ``lookback_windows`` are flat (all zeros included) repeats its value, as in the statistical forecasters.
    """

    name = "lstm"

    def __init__(
        self,
        lookback_windows: int = 6,
        hidden: int = 16,
        epochs: int = 150,
        lr: float = 0.02,
        seed: int = 0,
        min_samples: int = 64,
        fallback_alpha: float = 0.3,
    ) -> None:
        for key, v in (("lookback_windows", lookback_windows), ("hidden", hidden), ("epochs", epochs),
                       ("min_samples", min_samples)):  # fmt: skip
            if int(v) != v or v < 1:
                raise ConfigError(f"lstm {key} must be a positive integer, got {v}")
        if not lr > 0:
            raise ConfigError(f"lstm lr must be > 0, got {lr}")
        if not 0.0 < fallback_alpha <= 1.0:
            raise ConfigError(f"lstm fallback_alpha must be in (0, 1], got {fallback_alpha}")
        self.lookback_windows, self.hidden, self.epochs = int(lookback_windows), int(hidden), int(epochs)
        self.lr, self.seed, self.min_samples = float(lr), int(seed), int(min_samples)
        self.fallback_alpha = float(fallback_alpha)
        self.fallbacks = 0
        self.train_s = 0.0  # wall seconds of the last training
        self.train_loss = float("nan")  # final training MSE (scaled units)
        self._net: tuple[Any, Any] | None = None
        self._type_mean = np.zeros(0)  # per type, req/s, over the training data

    @property
    def trained(self) -> bool:
        return self._net is not None

    def fit(self, rates_rps: np.ndarray) -> None:
        r = check_history(rates_rps, what="training rates")
        torch = _torch()
        x, y = sliding_samples(r, self.lookback_windows)
        if len(x) < self.min_samples:
            self._net = None
            return
        start = time.perf_counter()
        with _one_thread(torch):
            self._train(torch, x, y)
        self._type_mean = r.mean(axis=0)
        self.train_s = time.perf_counter() - start

    def _train(self, torch: Any, x: np.ndarray, y: np.ndarray) -> None:
        gen = torch.Generator().manual_seed(self.seed)
        lstm = torch.nn.LSTM(1, self.hidden, batch_first=True, dtype=torch.float32)
        head = torch.nn.Linear(self.hidden, 1, dtype=torch.float32)
        params = [*lstm.parameters(), *head.parameters()]
        bound = 1.0 / np.sqrt(self.hidden)
        with torch.no_grad():  # torch's default init, but from our generator: no global seeding
            for p in params:
                p.uniform_(-bound, bound, generator=gen)
        inputs = torch.tensor(x[:, :, None], dtype=torch.float32)
        targets = torch.tensor(y[:, None], dtype=torch.float32)
        opt = torch.optim.Adam(params, lr=self.lr)
        loss = torch.zeros(())
        for _ in range(self.epochs):
            opt.zero_grad()
            out, _ = lstm(inputs)
            loss = torch.nn.functional.mse_loss(head(out[:, -1]), targets)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
        self._net = (lstm.eval(), head.eval())
        self.train_loss = float(loss.detach())

    def forecast(self, history_rps: np.ndarray, steps: int) -> np.ndarray:
        h, steps = check_history(history_rps), check_steps(steps)
        if self._net is None:
            self.fit(h)
        fallback = np.repeat(ewma_level(h, self.fallback_alpha)[None, :], steps, axis=0)
        if self._net is None:
            self.fallbacks += h.shape[1]
            return fallback
        if len(self._type_mean) != h.shape[1]:
            raise ConfigError(f"lstm was fitted on {len(self._type_mean)} types, history has {h.shape[1]}")
        torch = _torch()
        lstm, head = self._net
        x = h[-self.lookback_windows :]
        s = _scale(x, self._type_mean[None, :], axis=0)  # (1, types)
        inputs = torch.tensor((x / s).T[:, :, None], dtype=torch.float32)  # (types, windows, 1)
        preds = []
        with torch.no_grad(), _one_thread(torch):
            out, state = lstm(inputs)
            pred = head(out[:, -1])
            preds.append(pred)
            for _ in range(steps - 1):
                out, state = lstm(pred[:, None, :], state)
                pred = head(out[:, -1])
                preds.append(pred)
        f = np.maximum(torch.cat(preds, dim=1).numpy().astype(np.float64).T * s, 0.0)  # (steps, types)
        # the statistical forecasters' guard: non-finite, or above 10x the history's peak, is a blow-up
        bad = ~np.isfinite(f).all(axis=0) | (f.max(axis=0) > _BLOWUP * np.maximum(h.max(axis=0), 1e-9))
        self.fallbacks += int(bad.sum())
        f = np.where(bad[None, :], fallback, f)
        flat = x.max(axis=0) == x.min(axis=0)  # as the statistical ones: a flat input repeats its value
        return np.where(flat[None, :], x[-1][None, :], f)

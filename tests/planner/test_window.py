"""``window_share``: Kendall's identity for a decode window against busy periods simulated directly."""

from __future__ import annotations

import numpy as np
import pytest

from oserve.planner.window import window_share


def simulated_share(rate: float, x0: float, jumps: np.ndarray, room: float, *, runs: int = 20_000) -> float:
    """P(work absorbed <= room) over busy periods played out: Poisson arrivals in (0, T] each add a prefill time
    drawn from ``jumps`` to the window's end T, which lets more arrive, until a round brings none."""
    rng = np.random.default_rng(1)
    end = np.full(runs, x0)  # the window's end so far
    seen = np.zeros(runs)  # arrivals counted up to ``seen``
    work = np.zeros(runs)
    open_ = np.ones(runs, dtype=bool)
    while open_.any():
        n = rng.poisson(rate * (end - seen) * open_)
        draws = rng.choice(jumps, (runs, max(1, int(n.max()))))
        added = np.where(np.arange(draws.shape[1]) < n[:, None], draws, 0.0).sum(axis=1)
        seen = end.copy()
        work += added
        end = end + added
        open_ = added > 0
    return float(np.mean(work <= room))


@pytest.mark.parametrize(
    ("rate", "x0", "jumps", "room"),
    [
        (1.2, 0.5, np.array([0.15, 0.2, 0.25, 0.35, 0.5, 0.7]), 0.8),  # long prompts: a few heavy prefills
        (3.0, 0.3, np.array([0.05, 0.1, 0.4]), 0.6),
        (40.0, 2.0, np.array([0.01, 0.015, 0.02, 0.04]), 1.2),  # short prompts among long outputs: many
    ],
)
def test_kendall_matches_busy_periods_played_out(rate, x0, jumps, room) -> None:
    expected = simulated_share(rate, x0, jumps, room)
    got = float(window_share(rate, np.array([x0]), jumps, np.array([room]))[0])
    assert got == pytest.approx(expected, abs=0.03)


def test_no_room_means_no_arrival_may_land_and_more_room_never_hurts() -> None:
    jumps = np.array([0.1, 0.2])
    x0 = np.array([0.5, 0.5, 0.5])
    shares = window_share(2.0, x0, jumps, np.array([0.0, 0.3, 3.0]))
    assert shares[0] == pytest.approx(np.exp(-2.0 * 0.5))  # nothing arrives during the window's own work
    assert shares[0] < shares[1] < shares[2] <= 1.0

"""IW capacity calibrated against the simulator, and how a region-model's instances split between the tiers."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from fleet_factories import make_table, write_fleet, write_workload

from oserve.fleet import FleetContext, fitted_forecaster, load_fleet, load_workload_csv, make_problem
from oserve.fleet.calibrate import iw_calibration
from oserve.fleet.capacity import _capacity_model
from oserve.fleet.simulate import tier_split
from oserve.planner import Slo
from oserve.spec import ReplicaConfig, get_gpu, get_model


def test_iw_packs_at_the_fill_cap_and_niw_takes_the_rest() -> None:
    # config 0: mu_iw 10, mu_niw 20, NIW beside IW at 10 req/s; config 1: NIW only (mu_niw 30)
    table = replace(make_table([(0, 1, 10.0, 20.0), (0, 2, 0.0, 30.0)]), fill_cap=0.8)
    js = np.array([0, 1])
    active = np.array([[5.0, 1.0], [5.0, 1.0], [5.0, 1.0]])
    iw = np.array([0.0, 20.0, 45.0])  # none; 2.5 instances' worth at the cap; beyond the cap of all five
    k, fill, free = tier_split(active, iw, table, js)
    assert k.tolist() == [[0, 0], [3, 0], [5, 0]]  # 20 req/s at 8 per instance: 3 instances serve IW
    # beside IW: 3 x 0.8 - 2 instances' worth = 0.4 of one instance's IW capacity, 4 NIW req/s
    assert fill[1].tolist() == pytest.approx([4.0, 0.0])
    assert free[0].tolist() == [100.0, 30.0] and free[1].tolist() == [40.0, 30.0]
    assert fill[2].tolist() == [0.0, 0.0] and free[2].tolist() == [
        0.0,
        30.0,
    ]  # IW over the cap: no NIW beside


@pytest.fixture(scope="module")
def llama():
    spec, config = get_model("llama-3-8b"), ReplicaConfig(get_gpu("H100"), tp=1)
    slo = Slo(0.53, 0.037)
    prompts, outputs = np.full(8, 1100), np.full(8, 200)
    mu = _capacity_model(spec, slo, 0.99).capacity(config, prompts, outputs).rate_rps
    return spec, config, slo, prompts, outputs, mu


def test_calibration_finds_the_rate_the_simulator_holds(llama) -> None:
    spec, config, slo, prompts, outputs, mu = llama
    share = iw_calibration(spec, config, slo, prompts, outputs, mu, requests=1500)
    assert 0.6 <= share <= 1.0
    # told twice the rate, it confirms about the same req/s: the calibrated capacity is the simulator's
    doubled = iw_calibration(spec, config, slo, prompts, outputs, 2 * mu, requests=1500)
    assert doubled * 2 * mu == pytest.approx(share * mu, rel=0.15)
    assert doubled < 0.6


def test_iw_is_planned_to_hold_its_mean_at_the_fill_cap(tmp_path) -> None:
    fleet = load_fleet(write_fleet(tmp_path / "f.yaml"))
    ctx = FleetContext.build(fleet, load_workload_csv(write_workload(tmp_path / "w.csv", hours=48), fleet))
    table = make_table([(0, 1, 10.0, 20.0)])
    origin = ctx.workload.eval_start_min // 60
    forecaster = fitted_forecaster(ctx, "seasonal", origin)
    full, half = (
        make_problem(ctx, replace(table, fill_cap=cap), forecaster, origin, 6).iw_rps for cap in (1.0, 0.5)
    )
    peak = ctx.peak_factor[:, :, None]
    assert (peak < 2.0).all()
    np.testing.assert_allclose(half, full / peak * 2.0)  # the mean held at half the capacity beats the peak

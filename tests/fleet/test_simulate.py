"""The fleet simulation: NIW is never late when the capacity exists, the policies side by side, and the
request-level check of a sampled region-hour in the simulator."""

from __future__ import annotations

import numpy as np
import pytest
from fleet_factories import write_fleet, write_workload

from oserve.fleet import (
    FleetContext,
    build_capacity_table,
    check_region_hours,
    load_fleet,
    load_workload_csv,
    make_policy,
    simulate_fleet,
)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("fleet")
    fleet = load_fleet(write_fleet(root / "f.yaml"))
    workload = load_workload_csv(write_workload(root / "w.csv", hours=48), fleet)
    ctx = FleetContext.build(fleet, workload)
    return ctx, build_capacity_table(fleet, workload.lengths)


class Constant:
    """A fixed number of instances of the first config in every region; NIW pooled or not."""

    name = "constant"
    routes_iw = False

    def __init__(self, table, count: float, pooled: bool) -> None:
        self.table, self.count, self.pooled_niw = table, count, pooled

    def start(self, ctx, t0):
        out = np.zeros((ctx.shape[0], len(self.table.configs)))
        out[:, 0] = self.count
        return out

    def desired(self, view):
        return None


def _with_niw_burst(ctx, volume: float, hour: int) -> FleetContext:
    """The same fleet with IW at 20 req/s and every NIW request arriving in one hour of the run."""
    w = ctx.workload
    requests = np.zeros_like(w.requests)
    requests[:, :, 0] = 20.0 * 60.0
    start = w.eval_start_min + 60 * hour
    requests[0, 0, 1, start : start + 60] = volume / 60.0
    from dataclasses import replace

    return FleetContext.build(ctx.fleet, replace(w, requests=requests))


@pytest.mark.parametrize(
    ("volume_share", "hour", "pooled"), [(0.5, 0, True), (0.95, 3, False), (0.99, 6, True)]
)
def test_niw_never_late_when_capacity_exists(small, volume_share, hour, pooled) -> None:
    ctx, table = small
    mu_iw, mu_niw = table.configs[0].mu_iw_rps, table.configs[0].mu_niw_rps
    count = 4.0
    spare_rps = count * mu_niw * (1 - 20.0 / (count * mu_iw))  # NIW capacity left after IW, one region
    spare_rps *= ctx.shape[0] if pooled else 1  # pooled NIW may use every region's spare capacity
    deadline_s = ctx.fleet.niw_deadline_h * 3600
    # the burst arrives over one hour and must be done an hour-rounded deadline later: capacity for it exists
    volume = volume_share * spare_rps * (deadline_s - 3600)
    burst = _with_niw_burst(ctx, volume, hour)
    result = simulate_fleet(burst, Constant(table, count, pooled), hours=12)
    assert result.niw_deadline_met == 1.0
    assert result.niw_served[:, 0].sum() == pytest.approx(volume, rel=1e-6)
    late = _with_niw_burst(ctx, 2.0 * spare_rps * deadline_s, hour)  # twice what fits: some must be late
    assert simulate_fleet(late, Constant(table, count, pooled), hours=12).niw_deadline_met < 0.75


def test_capacity_table_prunes_shapes_dominated_on_the_same_gpus(small) -> None:
    ctx, table = small
    full = build_capacity_table(ctx.fleet, ctx.workload.lengths, prune=False)
    assert [c.label for c in full.configs] == ["H100:tp1", "H100:tp2"]
    tp1, tp2 = full.configs
    assert 2 * tp1.mu_iw_rps >= tp2.mu_iw_rps and 2 * tp1.mu_niw_rps >= tp2.mu_niw_rps
    assert [c.label for c in table.configs] == ["H100:tp1"]  # two TP1 instances beat one TP2 on both tiers


def test_policies_side_by_side(small) -> None:
    ctx, table = small
    results = {
        name: simulate_fleet(ctx, make_policy(name, table, ctx, forecaster="seasonal", replan_h=6), hours=12)
        for name in ("siloed", "reactive", "sageserve", "oserve-fleet")
    }
    s = {name: r.summary() for name, r in results.items()}
    assert s["siloed"]["iw_slo_attainment"] == 1.0 and s["siloed"]["scaling_actions"] == 0
    for name in ("sageserve", "oserve-fleet"):
        assert s[name]["niw_deadline_met"] == 1.0
        assert s[name]["iw_slo_attainment"] >= 0.99
        assert s[name]["gpu_hours"] < s["siloed"]["gpu_hours"]
        assert s[name]["scaling_actions"] > 0
    assert set(s["reactive"]) == {
        "gpu_hours",
        "cost_usd",
        "iw_slo_attainment",
        "niw_deadline_met",
        "scaling_actions",
    }
    r = results["oserve-fleet"]
    assert r.counts.shape == (2, len(r.table.configs), 12) and r.iw_load_rps.shape == (2, 1, 12)

    (check,) = check_region_hours(
        ctx, results["sageserve"], samples=1, max_gpus=4, window_s=60, min_requests=0
    )
    assert check.requests > 100 and 0.0 < check.simulated_attainment <= 1.0
    assert check.region in ("east", "west") and check.model == "llama-3-8b"


class Holding(Constant):
    """``Constant``, but asks again for instances it lost (to spot reclaims)."""

    def desired(self, view):
        return self.start(None, 0) if (view.active.sum(axis=1) < self.count).any() else None

    def start(self, ctx, t0):
        out = np.zeros((2, len(self.table.configs)))
        out[:, 0] = self.count
        return out


def test_spot_reclaims_stop_instances_and_their_replacements_bill_on_demand(small) -> None:
    from dataclasses import replace

    ctx, table = small
    east = ctx.fleet.regions[0]
    assert east.pools[0].spot == 8  # the test fleet: east has 8 spot H100s beside 32 on-demand; west none
    fleet = replace(
        ctx.fleet, regions=(replace(east, pools=(replace(east.pools[0], spot_eviction_per_h=0.5),)),
                            *ctx.fleet.regions[1:])
    )  # fmt: skip
    evicting = FleetContext.build(fleet, ctx.workload)
    calm = FleetContext.build(replace(fleet, regions=(east, *fleet.regions[1:])), ctx.workload)
    held = simulate_fleet(evicting, Holding(table, 4.0, True), hours=12)
    baseline = simulate_fleet(calm, Holding(table, 4.0, True), hours=12)
    lost = simulate_fleet(evicting, Constant(table, 4.0, True), hours=12)
    assert baseline.spot_evictions == 0 and baseline.scaling_actions == 0
    # 4 GPUs on spot at 0.5 an hour for 12 h: ~24 reclaims, fewer while replacements run on-demand
    assert 8 <= held.spot_evictions <= 24
    assert held.scaling_actions == held.spot_evictions  # every reclaimed instance asked for again
    # replacements bill on-demand while the spot GPUs are out (and nothing while they are on their way)
    assert held.cost_usd / held.gpu_hours > baseline.cost_usd / baseline.gpu_hours
    assert held.gpu_hours < baseline.gpu_hours
    assert lost.spot_evictions == 4  # never replaced: east runs out of instances
    assert lost.iw_slo_attainment < held.iw_slo_attainment <= baseline.iw_slo_attainment

"""The lull check (``ControllerCore._lull_check``): a latency switch bets that a lull lasts. On the real ``swing``
scenario (night and day phases of the Azure code hour) with standby engines (switches nearly free), the controller
without the check switched to one TP8 replica in the first night and met the day with a fraction of the capacity;
with it, every latency switch waits for a whole history and must serve that history's busiest bin."""

from __future__ import annotations

import pytest

from oserve.adapt.decide import DecisionConfig
from oserve.adapt.forecast import make_forecaster
from oserve.adapt.policy import ForecastSource, start_adaptive
from oserve.adapt.scenarios import build_scenario
from oserve.adapt.switch import WAKE_RESTART_S
from oserve.planner import default_slo
from oserve.planner.baselines import homogeneous_candidates
from oserve.sim import simulate
from oserve.spec import get_model, parse_cluster

MODEL, CLUSTER = get_model("llama-3.1-8b"), parse_cluster("1x8xH100")
SLO = default_slo(MODEL, CLUSTER)
FOUR_TP2 = next(
    c.deployment for c in homogeneous_candidates(MODEL, CLUSTER) if (c.config.tp, c.config.pp) == (2, 1)
)


@pytest.mark.slow
@pytest.mark.parametrize("lull_check", [True, False])
def test_cheap_latency_switches_wait_out_the_night_on_swing(shared_traces, lull_check: bool) -> None:
    trace = build_scenario("swing", shared_traces, MODEL, CLUSTER, SLO, load=0.9, minutes=17, phase_s=200.0)
    config = DecisionConfig(restart_s=WAKE_RESTART_S, lull_check=lull_check)
    static = simulate(trace, FOUR_TP2, MODEL, CLUSTER, slo=SLO.to_dict())
    seed = ("static", FOUR_TP2, "weighted", static)
    source = ForecastSource(make_forecaster("ewma"))
    start, policy = start_adaptive(trace, MODEL, CLUSTER, SLO, source, config, prior=trace, seeds=[seed])
    assert start.describe() == FOUR_TP2.describe()
    ran = simulate(
        trace, start, MODEL, CLUSTER, router=policy.router, grid=policy.grid, policy=policy, slo=SLO.to_dict()
    ).summary
    latency = [d for d in policy.core.decisions if d.gain_requests <= 0 and "mean latency" in d.reason]
    assert latency  # the night's room to spare tempts the latency rule
    if not lull_check:  # the bet without the check: a switch in the first night, and the day lost
        assert policy.core.switches and policy.core.switches[0].time_s < 200.0
        assert ran["goodput_rps"] < 0.95 * static.summary["goodput_rps"]
        return
    early = [d for d in latency if d.time_s < config.history_s]
    assert early and all(not d.switch and "waits for 900 s of history" in d.reason for d in early)
    late = [d for d in latency if d.time_s >= config.history_s]
    assert late and all(not d.switch and "busiest bin" in d.reason for d in late)
    assert ran["goodput_rps"] >= 0.98 * static.summary["goodput_rps"]

"""The verify step: replay a switch in the simulator from the work in flight, against staying, before making it.

A capacity model compares steady states; a switch happens in a transient. The replay starts both branches at the
decision time from the same ``Backlog`` — the requests queued and running on the current replicas — and feeds
both the same traffic to come (``ReplayInput.future``, arrivals relative to now). Staying runs the current
deployment as it is; switching applies the switch's waves from now (the switch planner's drains, weight moves
and engine starts: the GPUs in transition serve nothing), so the switch pays its own cost in the replay: the
requests it delays, those queued behind them and those that arrive while capacity is down. Both branches score
the same requests (the backlog's and the future's), so their SLO-met counts compare directly.

A switch is confirmed (``ReplayVerdict.confirmed``) when it meets the SLO for ``verify_margin`` more of the
replayed requests and for ``hysteresis`` of the misses staying would leave; or, as many met, with a p99 E2E
``latency_gain`` lower. Anything else — a loss, a tie, nothing to replay — holds. A confirmed switch whose
second replay, on the recent traffic as it came (``held_back``), meets the SLO for fewer requests than staying
holds too: a gain only at a sustained forecast peak is a bet the traffic may never call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from oserve.adapt.decide import Decision, DecisionConfig
from oserve.perf import Calibration
from oserve.planner import Slo
from oserve.sim import SimResult, Switch, simulate
from oserve.sim.backlog import Backlog
from oserve.sim.policy import SequencePolicy
from oserve.spec import Cluster, Deployment, ModelSpec, RequestGrid
from oserve.spec.router import RouterSpec
from oserve.trace import Trace

__all__ = ["BranchScore", "ReplayInput", "ReplayVerdict", "confirm", "held_back", "replay_switch"]


@dataclass(frozen=True, slots=True, eq=False)
class ReplayInput:
    """What a replay starts from: the decision time, the running deployment, the switch (its waves), the work in
    flight, the traffic to come (arrivals relative to ``now_s``) and the request grid the router types by."""

    now_s: float
    current: Deployment
    waves: tuple[Switch, ...]
    backlog: Backlog
    future: Trace
    edges: RequestGrid | None = None


@dataclass(frozen=True, slots=True)
class BranchScore:
    """One branch of a replay: requests scored, met within the SLO, p99 TTFT and E2E (s)."""

    requests: int
    met: int
    ttft_p99_s: float
    e2e_p99_s: float

    @classmethod
    def of(cls, result: SimResult) -> BranchScore:
        s = result.summary
        total = int(s["requests"]) if "requests" in s else len(result.records)
        met = round(float(s["slo_attainment"]) * total) if total else 0
        return cls(total, met, float(s["ttft_p99"]), float(s["e2e_p99"]))


@dataclass(frozen=True, slots=True)
class ReplayVerdict:
    """Staying against switching, replayed from the same backlog and traffic."""

    confirmed: bool
    reason: str
    stay: BranchScore | None = None
    switch: BranchScore | None = None
    backlog: int = 0  # requests in flight the replay started from
    future: int = 0  # requests that arrive in the replay
    check: ReplayVerdict | None = None  # the second replay, on the traffic as it came (``held_back``)

    def to_dict(self) -> dict[str, Any]:
        def score(b: BranchScore | None) -> dict[str, Any] | None:
            if b is None:
                return None
            return {
                "requests": b.requests,
                "met": b.met,
                "ttft_p99_s": b.ttft_p99_s,
                "e2e_p99_s": b.e2e_p99_s,
            }

        return {
            "confirmed": self.confirmed,
            "reason": self.reason,
            "stay": score(self.stay),
            "switch": score(self.switch),
            "backlog": self.backlog,
            "future": self.future,
            "check": self.check.to_dict() if self.check is not None else None,
        }


def _edged(deployment: Deployment, edges: RequestGrid | None) -> Deployment:
    return deployment if edges is None else replace(deployment, type_edges=edges)


def replay_switch(
    x: ReplayInput,
    model: ModelSpec,
    cluster: Cluster,
    slo: Slo,
    config: DecisionConfig,
    *,
    router: str | RouterSpec,
    calibration: Calibration | None = None,
    seed: int = 0,
) -> ReplayVerdict:
    """Replay staying and switching from ``x.backlog``; the verdict says whether the switch is a gain."""
    if len(x.backlog) + len(x.future) == 0:
        return ReplayVerdict(False, "nothing in flight or to come to replay the switch on")
    waves: Sequence[Switch] = [replace(w, deployment=_edged(w.deployment, x.edges)) for w in x.waves]

    def run(switches: Sequence[Switch]) -> BranchScore:
        result = simulate(
            x.future,
            _edged(x.current, x.edges),
            model,
            cluster,
            router=router,
            calibration=calibration,
            policy=SequencePolicy(switches, start_s=x.now_s, poll_s=config.wave_poll_s),
            slo=slo.to_dict(),
            seed=seed,
            backlog=x.backlog,
        )
        return BranchScore.of(result)

    stay, switch = run([]), run(waves)
    gain = switch.met - stay.met
    misses = stay.requests - stay.met
    need = max(config.verify_margin * stay.requests, config.hysteresis * misses, 1.0)
    faster = switch.met >= stay.met and switch.e2e_p99_s <= stay.e2e_p99_s * (1 - config.latency_gain)
    seen = (
        f"replayed {len(x.backlog)} requests in flight + {len(x.future)} to come: switching meets the SLO "
        f"for {switch.met}/{switch.requests} (TTFT p99 {switch.ttft_p99_s:.2f} s, E2E p99 "
        f"{switch.e2e_p99_s:.1f} s), staying {stay.met} (TTFT p99 {stay.ttft_p99_s:.2f} s, E2E p99 "
        f"{stay.e2e_p99_s:.1f} s)"
    )
    if gain >= need:
        return ReplayVerdict(True, seen, stay, switch, len(x.backlog), len(x.future))
    if faster:
        return ReplayVerdict(
            True,
            f"{seen}; p99 E2E -{1 - switch.e2e_p99_s / stay.e2e_p99_s:.0%}",
            stay,
            switch,
            len(x.backlog),
            len(x.future),
        )
    return ReplayVerdict(
        False, f"{seen}; a gain of {gain} < {need:.0f} needed", stay, switch, len(x.backlog), len(x.future)
    )


def held_back(
    forecast: ReplayVerdict, as_came: ReplayVerdict, factor: float, margin: float = 0.01
) -> ReplayVerdict:
    """The verdict of a switch replayed twice: on the forecast held for the whole replay (``forecast``) and on the
    recent traffic as it came, its peak bins scaled to the forecast's by ``factor`` (``as_came``). Confirmed only
    when the first confirms and the second does not lose: switching meets the SLO for no fewer than staying less
    ``margin`` of the replayed requests (at least one request), the same margin the first must win by
    (``DecisionConfig.verify_margin``), so a loss within the replay's noise does not veto a switch the forecast
    confirms (a ramp's switch pays its restart on the lighter past traffic)."""
    if not forecast.confirmed or as_came.switch is None or as_came.stay is None:
        return replace(forecast, check=as_came)
    loss = as_came.stay.met - as_came.switch.met
    if loss <= max(margin * as_came.stay.requests, 1.0):
        return replace(forecast, check=as_came)
    return replace(
        forecast,
        confirmed=False,
        reason=f"{forecast.reason}; but on the traffic as it came (peak to peak, x{factor:.2f}: "
        f"{as_came.future} requests to come) switching meets the SLO for {as_came.switch.met}/"
        f"{as_came.switch.requests}, staying {as_came.stay.met}: a loss of {loss}",
        check=as_came,
    )


def confirm(decision: Decision, verdict: ReplayVerdict) -> Decision:
    """``decision`` as the replay leaves it: a switch only when the verdict confirms it."""
    if verdict.confirmed:
        return replace(decision, reason=f"{decision.reason}; {verdict.reason}", replay=verdict)
    return replace(
        decision, switch=False, reason=f"model: {decision.reason}; but {verdict.reason}", replay=verdict
    )

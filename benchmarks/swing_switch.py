"""Reproduce one sensitivity variant of the headline on a phased scenario and print the decision log.

    python benchmarks/swing_switch.py --variant forecast10 --setup llama-3.1-70b@2x8xH100 --around 960

Runs ``static`` (the best homogeneous shape, simulated) once, cached under ``benchmarks/results/``, then
``oserve`` under the variant the headline's ``--sensitivity`` builds (``forecast10``: forecast +-10%;
``standby``: 0.1 s wake-ups; ``plain``: neither), and prints goodput against static and every decision within
``--window`` s of ``--around`` (all switches, always). ``--probe``: the first switch the capacity model wanted
(made or refused by its replay) replayed again from the same state on other futures: the traffic that came, and
the last 300 / 600 / 900 s as they came and at given rates (docs/adapt.md, "Switching headroom").
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from headline import _row, _setup, scenario_trace, simulate_started
from oserve.adapt.decide import DecisionConfig
from oserve.adapt.forecast import make_forecaster
from oserve.adapt.policy import ForecastSource, NoisySource, start_adaptive
from oserve.adapt.replay import ReplayInput, replay_switch
from oserve.adapt.switch import WAKE_RESTART_S
from oserve.adapt.waves import staged_switches
from oserve.planner import default_slo, simulated_best_homogeneous
from oserve.spec import RequestGrid
from oserve.trace import scale_rate, window

RESULTS = Path(__file__).resolve().parent / "results"


def variant(name: str, config: DecisionConfig):
    ewma = ForecastSource(make_forecaster("ewma"))
    if name.startswith("forecast"):
        return NoisySource(ewma, int(name.removeprefix("forecast")) / 100), config
    if name == "standby":
        return ewma, replace(config, restart_s=WAKE_RESTART_S)
    if name.startswith("cost"):
        f = float(name.removeprefix("cost"))
        return ewma, replace(config, restart_s=config.restart_s * f, cost_factor=f)
    if name == "plain":
        return ewma, config
    raise SystemExit(f"unknown variant {name!r}: forecastNN, costF, standby, plain")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--traces", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/traces")
    p.add_argument("--setup", default="llama-3.1-70b@2x8xH100")
    p.add_argument("--scenario", default="swing")
    p.add_argument("--minutes", type=float, default=20)
    p.add_argument("--phase", type=float, default=300)
    p.add_argument("--load", type=float, default=0.9)
    p.add_argument(
        "--variant", default="forecast10", help="comma-separated: forecast10, standby, cost2, plain"
    )
    p.add_argument("--around", type=float, default=960)
    p.add_argument("--window", type=float, default=120)
    p.add_argument("--probe", action="store_true")
    args = p.parse_args(argv)
    model, cluster = _setup(args.setup)
    slo = default_slo(model, cluster)
    trace = scenario_trace(args, args.scenario, model, cluster, slo, args.load)
    key = f"{args.setup}-{args.scenario}-{args.minutes:g}-{args.phase:g}-{args.load:g}".replace("@", "_")
    cache = RESULTS / f"static-{key}.pkl"
    if cache.exists():
        dep, res = pickle.loads(cache.read_bytes())
    else:
        t0 = time.perf_counter()
        dep, res, _ = simulated_best_homogeneous(trace, model, cluster, slo=slo.to_dict())
        RESULTS.mkdir(exist_ok=True)
        cache.write_bytes(pickle.dumps((dep, res)))
        print(f"static searched in {time.perf_counter() - t0:.0f} s", flush=True)
    static = _row(res.summary)
    print(
        f"{args.setup} {args.scenario}: {len(trace)} requests; static {dep.describe()}: goodput "
        f"{static['goodput_rps']:.3f} req/s, p99 {static['e2e_p99']:.1f} s"
    )
    for name in args.variant.split(","):
        source, config = variant(name, DecisionConfig())
        t0 = time.perf_counter()
        start, policy = start_adaptive(
            trace, model, cluster, slo, source, config, prior=trace, seeds=[("static", dep, "weighted", res)]
        )
        core, seen = policy.core, {}
        step = core._step

        def watched(obs, step=step, seen=seen):
            seen[obs.now_s] = obs
            return step(obs)

        core._step = watched
        r = _row(simulate_started(trace, model, cluster, slo, start, policy).summary)
        print(
            f"\n{name}: start {policy.start_label} {start.describe()}; goodput {r['goodput_rps']:.3f} "
            f"(x{r['goodput_rps'] / static['goodput_rps']:.3f}), p99 {r['e2e_p99']:.1f} s "
            f"(x{static['e2e_p99'] / r['e2e_p99']:.2f}), switches {r['switches']:.0f} "
            f"[{time.perf_counter() - t0:.0f} s]",
            flush=True,
        )
        for d in policy.decisions:
            if d.switch or d.replay is not None or abs(d.time_s - args.around) <= args.window:
                print(
                    f"  t={d.time_s:5.0f} {d.kind:<7} demand {d.demand_rps:.2f} alpha "
                    f"{d.current_alpha:.3f}->{d.target_alpha:.3f} target "
                    f"{d.target.describe() if d.target else '-'}\n      {d.reason}"
                )
        wanted = [d for d in policy.decisions if d.replay is not None and d.gain_requests > 0]
        if args.probe and wanted:
            probe(wanted[0], seen[wanted[0].time_s], trace, model, cluster, slo, config, policy.router)
    return 0


def probe(d, obs, trace, model, cluster, slo, config, router) -> None:
    """Replay ``d``'s switch from ``obs`` (its state) on other futures than the controller's."""
    waves = tuple(staged_switches(obs.deployment, d.plan, model, cluster)) or (d.plan.to_switch(),)
    now = d.time_s
    futures = [("the traffic that came", window(trace, now, now + config.verify_s))]
    for span in (300, 600, 900):
        past = window(obs.recent, max(0.0, now - span), now)
        rate = len(past) / min(span, now)
        futures.append((f"last {span} s as they came ({rate:.2f} req/s)", past))
        if span == 300:
            for target in (4.0, 6.0, 8.0, d.demand_rps):
                futures.append((f"last {span} s at {target:.2f} req/s", scale_rate(past, target / rate)))
    print(f"  probe t={now:.0f} s, {len(obs.backlog)} requests in flight:")
    for label, future in futures:
        x = ReplayInput(now, obs.deployment, waves, obs.backlog, future, RequestGrid.of(obs.grid))
        v = replay_switch(x, model, cluster, slo, config, router=router)
        print(
            f"    {label:<40} {len(future):5d} requests: staying meets {v.stay.met / v.stay.requests:6.1%}, "
            f"switching {v.switch.met / v.switch.requests:6.1%}"
        )


if __name__ == "__main__":
    sys.exit(main())

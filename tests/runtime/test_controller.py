"""The live controller over the controller core: its config in windows, the gateway's ledger it observes, its
pricing of the running deployment, and the live loop making the core's decision over real loopback HTTP, with a
manual `oserve deploy` pinning the deployment until `oserve deploy --release`."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from serving import ADMIN, ADMIN_TOKEN, ServerThread, serve_config

from oserve.cli.main import main
from oserve.errors import ConfigError
from oserve.planner import default_slo, parse_rates, plan
from oserve.runtime.controller import ControllerConfig, deployment_alpha, type_lengths_from_grid
from oserve.runtime.gateway.ledger import Ledger
from oserve.runtime.loadgen import LoadRequest, run_load, summarise
from oserve.spec import Deployment, Replica, ReplicaConfig, get_gpu, get_model, parse_cluster
from oserve.trace import TypeGrid

H100 = get_gpu("H100")
TWO_TP2 = Deployment(
    "llama-3-8b",
    (Replica(ReplicaConfig(H100, tp=2), (0, 1), "a"), Replica(ReplicaConfig(H100, tp=2), (2, 3), "b")),
)


def test_the_live_config_is_the_cores_config_in_windows():
    c = ControllerConfig(
        window_s=10.0, history_windows=30, horizon_windows=6, min_gain=0.1, min_interval_s=60
    )
    d = c.decision_config()
    assert (d.window_s, d.bin_s, d.history_s, d.horizon_s) == (10.0, 10.0, 300.0, 60.0)
    assert (d.hysteresis, d.min_interval_s, d.verify_s) == (0.1, 60.0, c.verify_s)
    with pytest.raises(ConfigError):
        ControllerConfig(window_s=0)


def test_the_ledger_holds_what_is_in_flight_and_what_came_recently():
    now = [100.0]
    ledger = Ledger(clock=lambda: now[0])
    a = ledger.arrived(500, 100)
    now[0] = 101.0
    b = ledger.arrived(3000, 50)
    ledger.routed(a, "r0")
    ledger.routed(b, "r1")
    ledger.routed(b, "r2")  # a retry: the replica it is on now
    now[0] = 102.0
    ledger.finished(a, 130)
    backlog = ledger.backlog()
    assert backlog.now_s == 2.0 and backlog.replica == ("r2",)
    assert list(backlog.arrival_s) == [1.0] and list(backlog.prompt_tokens) == [3000]
    recent = ledger.recent_trace(0.0)
    assert list(recent.arrival_s) == [0.0, 1.0]
    assert list(recent.output_tokens) == [130, 50]  # the true output once it ended, the estimate before
    assert len(ledger.recent_trace(0.5)) == 1


def test_type_lengths_sit_inside_their_bins():
    grid = TypeGrid((1000,), (200,))
    lengths = type_lengths_from_grid(grid)
    assert lengths == {
        "p<1000,o<200": (500.0, 100.0),
        "p<1000,o>=200": (500.0, 300.0),
        "p>=1000,o<200": (1500.0, 100.0),
        "p>=1000,o>=200": (1500.0, 300.0),
    }
    for name, (p, o) in lengths.items():
        assert grid.names[int(grid.classify_lengths(p, o))] == name


def test_running_deployment_is_priced_by_the_plans_lp():
    model, cluster = get_model("llama-3-8b"), parse_cluster("1x4xH100")
    demands, grid = parse_rates("512:128=20")
    result = plan(model, cluster, demands, default_slo(model, cluster), grid=grid, pps=(1,))
    assert deployment_alpha(result.deployment, result) == pytest.approx(result.alpha)
    # two TP2 sustain less of this short-request load than the plan's four TP1
    assert 0 < deployment_alpha(TWO_TP2, result) < result.alpha / 1.1
    assert deployment_alpha(None, result) == 0.0


ONE_TP1 = Deployment("llama-3-8b", (Replica(ReplicaConfig(H100, tp=1), (0,), "a"),))


def _not_json(constant: str):
    raise AssertionError(f"{constant} is not JSON")


def _wait_for(controller, kind: str, after: int = 0, timeout_s: float = 30.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [e for e in list(controller.events)[after:] if e.kind == kind]
        if found:
            return found[0]
        time.sleep(0.1)
    seen = [(e.kind, e.detail.get("reason")) for e in list(controller.events)[after:]]
    raise AssertionError(f"no {kind!r} event after #{after}: {seen}")


def test_live_loop_makes_the_cores_decision_and_a_manual_deploy_pins_it(tmp_path: Path):
    """One TP1 replica on four GPUs under long prompts: the core plans more replicas and its replay (from the
    gateway's requests in flight) confirms the gain. But `oserve deploy` of that same replica pins it: the
    controller holds while the load runs, over real loopback HTTP, until `oserve deploy --release`; then the
    core's switch is carried out and no request fails."""
    file = tmp_path / "one-tp1.yaml"
    ONE_TP1.save(file)
    config = serve_config(
        tmp_path,
        deployment=str(file),
        **{
            "controller.enabled": True,
            "controller.window_s": 0.5,
            "controller.min_history_windows": 2,
            "controller.horizon_windows": 20,
            "controller.forecaster": "last",
            "controller.min_interval_s": 0.0,
            "controller.verify_s": 5.0,
        },
    )
    served = ServerThread(config)
    outcomes: list = []
    try:
        url, controller = served.url, served.server.controller
        gateway = ["--gateway", url, "--admin-token", ADMIN_TOKEN]
        assert main(["deploy", str(file), *gateway]) == 0
        assert controller.pinned is not None
        load = [LoadRequest(i / 25, 2000, 200, stream=i % 2 == 0) for i in range(250)]  # 25 req/s for 10 s
        sender = threading.Thread(
            target=lambda: outcomes.extend(asyncio.run(run_load(url, "llama-3-8b", load)))
        )
        sender.start()
        held = _wait_for(controller, "hold")
        time.sleep(2.0)  # windows under load, pinned
        assert held.detail["reason"].startswith("pinned")
        status_req = urllib.request.Request(f"{url}/admin/status", headers=ADMIN)
        with urllib.request.urlopen(status_req, timeout=10) as resp:
            status = json.loads(resp.read(), parse_constant=_not_json)  # no NaN in the events
        assert status["pinned"] == "deployed by hand: 1 x H100-SXM-80GB:tp1"
        assert any(e["kind"] == "hold" for e in status["controller"])
        assert not any(e.kind == "switch" for e in controller.events)
        assert served.server.orchestrator.current().describe() == "1 x H100-SXM-80GB:tp1"
        seen = len(controller.events)
        assert main(["deploy", "--release", *gateway]) == 0
        assert controller.pinned is None
        switch = _wait_for(controller, "switch", after=seen)
        sender.join(60)
        detail = switch.detail
        replay = detail["replay"]
        go, stay = replay["switch"], replay["stay"]
        # confirmed as the core's rule says: more requests within the SLO, or as many with a lower p99 E2E
        assert replay["confirmed"] and (
            go["met"] > stay["met"] or (go["met"] == stay["met"] and go["e2e_p99_s"] < stay["e2e_p99_s"])
        ), replay
        assert sum(detail["forecast_rps"].values()) > 5
        now = served.server.orchestrator.current()
        assert now.describe() == detail["planned"] != "1 x H100-SXM-80GB:tp1"
        assert sum(r.config.num_gpus for r in now.replicas) > 1
        assert main(["deploy", "--release", *gateway]) == 0  # nothing pinned: says so, succeeds
    finally:
        served.close()
    assert summarise(outcomes)["failed"] == 0, summarise(outcomes)["errors"]


def test_the_controller_holds_a_running_pd_pool():
    """The core's LP prices aggregated shapes only: with a pool running, each window holds (and never applies)."""

    class Running:
        def __init__(self, deployment: Deployment) -> None:
            self.deployment, self.applied = deployment, []

        def current(self) -> Deployment:
            return self.deployment

        async def apply(self, deployment: Deployment):
            self.applied.append(deployment)

    pool = Deployment(
        "llama-3-8b",
        (
            Replica(ReplicaConfig(H100, role="prefill"), (0,), "p0"),
            Replica(ReplicaConfig(H100, role="decode"), (1,), "d0"),
        ),
    )
    from oserve.runtime.controller import Controller

    orch = Running(pool)
    counts = {"n": 0}

    def observe() -> dict[str, int]:
        counts["n"] += 50
        return {name: counts["n"] for name in TypeGrid().names}

    ticks = iter(range(100))
    controller = Controller(
        orch,  # type: ignore[arg-type]
        observe,
        model=get_model("llama-3-8b"),
        cluster=parse_cluster("1x4xH100"),
        grid=TypeGrid(),
        slo=default_slo(get_model("llama-3-8b"), parse_cluster("1x4xH100")),
        config=ControllerConfig(window_s=1.0, min_history_windows=1, min_interval_s=0.0),
        clock=lambda: float(next(ticks)),
    )
    controller.observe_window()
    events = [asyncio.run(controller.step()) for _ in range(3)]
    assert [e.kind for e in events] == ["hold"] * 3 and "prefill/decode pool" in events[0].detail["reason"]
    assert orch.applied == []


def test_a_window_a_switch_overran_fills_one_history_row_per_window():
    """The simulator bins its history by ``window_s``; the live loop, whose step can overrun windows (a switch
    applied), gives the span it observed one row per window it covered, at the span's mean rate."""
    from oserve.runtime.controller import Controller

    now = [0.0]
    counts = {"n": 0}

    def observe() -> dict[str, int]:
        return {name: counts["n"] for name in TypeGrid().names}

    controller = Controller(
        None,  # type: ignore[arg-type]  # still warming: the orchestrator is never asked
        observe,
        model=get_model("llama-3-8b"),
        cluster=parse_cluster("1x4xH100"),
        grid=TypeGrid(),
        slo=default_slo(get_model("llama-3-8b"), parse_cluster("1x4xH100")),
        config=ControllerConfig(window_s=2.0, history_windows=30, min_history_windows=30),
        clock=lambda: now[0],
        time_scale=4.0,
    )
    controller.observe_window()
    now[0], counts["n"] = 2.0, 10
    asyncio.run(controller.step())
    assert len(controller.history) == 1 and controller.history[-1][0] == pytest.approx(5.0)
    now[0], counts["n"] = 8.0, 40  # three windows in one step
    asyncio.run(controller.step())
    assert len(controller.history) == 4
    assert [float(r[0]) for r in list(controller.history)[1:]] == pytest.approx([5.0] * 3)
    with pytest.raises(ConfigError):
        Controller(
            None,  # type: ignore[arg-type]
            observe,
            model=get_model("llama-3-8b"),
            cluster=parse_cluster("1x4xH100"),
            grid=TypeGrid(),
            slo=default_slo(get_model("llama-3-8b"), parse_cluster("1x4xH100")),
            time_scale=0.0,
        )

"""What is simulated is what runs: one trace replayed through ``simulate()`` and through ``oserve serve`` (emulated
engines at a speed-up, real loopback HTTP) makes the same routing decisions.

The live run's clock is the engines' emulated clock (``backend.speed`` times the wall clock), so the trace's
arrivals are replayed that much faster; the simulation runs on the times the load generator sent them, in emulated
seconds (the trace's plus the client's lag). The simulated trace carries what the gateway sees of each request: its
prompt as the gateway counts it and ``max_tokens``; the gateway names the replica that answered in
``x-oserve-replica``. The prompts share no prefix (``distinct``): the trace names none, so the simulator caches
none, and the emulated engines (which cache prefixes, as vLLM) must not find one either. With one filler prompt for
all, every live request but its tail was a prefix-cache hit, live requests finished 1-5% sooner than simulated, and
a request ending just before an arrival live but just after it simulated flipped a near-tie of load (93-94% of
decisions alike). Timing jitter of the live run (event-loop scheduling, HTTP) still flips near-ties, and a
load-aware router's state then diverges for everything after, so the free-running share is printed but not held
to a bar; the bar is on decisions given the same history: the simulation routes each request where the live run
did and asks its router what it would have chosen. "Timing jitter aside" (the issue's words) is made exact: a
decision that differs counts as jitter only when it is a one-request tie, i.e. the router picks the live replica
once one request is moved by a moment (one fewer on the live pick, as if it had just finished, or one more on the
simulator's pick); the strict share is held to a bar too, a lower one.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import numpy as np
import pytest
from serving import ServerThread, serve_config

from oserve.routing import ROUTERS, make_router
from oserve.runtime.api import estimate_text_tokens
from oserve.runtime.loadgen import prompt_text, requests_from_trace, run_load, summarise
from oserve.runtime.serve import Server
from oserve.sim import simulate
from oserve.spec import get_model, parse_cluster
from oserve.spec.router import RouterSpec
from oserve.trace import Trace, load_trace

SPEED = 2.0
CHECKED = ("allowed-least-load", "weighted")
AGREE = 0.95  # issue 18: the replica chosen agrees for >= 95% of requests, timing jitter aside
STRICT = 0.9  # without setting one-request ties aside (95.0-99.0% measured, 93.0% once at load average 10)


@pytest.mark.parametrize("router", CHECKED)
def test_simulated_and_served_routing_agree(router: str, tmp_path: Path, shared_traces: Path):
    conv = load_trace(shared_traces / "azure_conv_2023.csv")
    trace = conv.take(np.arange(400, 600))  # 200 requests of the conversation hour at its own pace
    requests = requests_from_trace(trace, time_scale=SPEED, stream_every=2, chat_every=0, distinct=True)
    config = serve_config(tmp_path, **{"backend.speed": SPEED})
    planned = Server(
        config
    ).initial  # what serve plans for its default rates (4 x TP1 here), under ``router``
    path = tmp_path / "deployment.yaml"
    dataclasses.replace(planned, router=RouterSpec(router)).save(path)
    server = ServerThread(config.merged({"deployment": str(path)}))
    try:
        deployment = server.report.deployment
        grid = server.server.grid
        outcomes = asyncio.run(run_load(server.url, "llama-3-8b", requests))
        live_router = server.server.gateway.table.router
    finally:
        server.close()
    summary = summarise(outcomes)
    assert summary["failed"] == 0, summary["errors"]
    assert type(live_router) is ROUTERS[router]

    seen_prompt = [estimate_text_tokens(prompt_text(r.prompt_tokens, r.prefix_id)) for r in requests]
    outputs = [r.output_tokens for r in requests]
    # arrivals when the load generator sent them (its lag behind the trace is the client's jitter), in order
    sent = np.maximum.accumulate([o.sent_s * SPEED for o in outcomes])
    replay = Trace.from_arrays(sent, seen_prompt, outputs, extras={"max_tokens": outputs}, sort=False)
    served = [o.replica for o in outcomes]
    names = [r.name for r in deployment.replicas]
    assert set(served) <= set(names)
    model, cluster = get_model("llama-3-8b"), parse_cluster("1x4xH100")

    # free-running: the simulator's own choices all the way (one jittered near-tie diverts all that follows)
    free = simulate(replay, deployment, model, cluster, router=router, grid=grid)
    own = free.records.sort_values("request_id")["replica"].tolist()
    free_share = float(np.mean([a == b for a, b in zip(own, served, strict=True)]))

    # jitter set aside: each request routed live as it was, the simulator's router asked what it would choose
    # in the simulated state that history produced
    forced = _Forced(router, [names.index(n) for n in served])
    simulate(replay, deployment, model, cluster, router=forced.factory, grid=grid)
    assert len(forced.would) == len(served)
    alike = np.array(forced.would) == np.array(forced.live)
    same, jitter = float(np.mean(alike)), float(np.mean(alike | np.array(forced.tie)))
    print(
        f"\n{router}: {same:.1%} of {len(served)} decisions alike given the same history "
        f"({jitter:.1%} with one-request ties set aside), {free_share:.1%} free-running (simulate vs serve)"
    )
    assert jitter >= AGREE  # see docs/control-plane.md for the figures measured
    assert same >= STRICT


class _Forced:
    """A router that returns the live run's choice for each arrival in turn, recording what ``name`` would pick."""

    def __init__(self, name: str, live: list[int]) -> None:
        self.name, self.live, self.would, self.tie = name, live, [], []

    def factory(self, weights, seed):
        inner = make_router(self.name, weights, seed)  # stateless: asking it twice changes nothing
        outer = self

        class Router:
            signals = inner.signals  # the same load signals filled as for the router itself

            def route(self, type_index, tokens, load, *args, **kwargs):
                would = inner.route(type_index, tokens, load, *args, **kwargs)
                live = outer.live[len(outer.would)]
                outer.would.append(would)
                outer.tie.append(
                    would != live
                    and any(
                        inner.route(type_index, tokens, moved, *args, **kwargs) == live
                        for moved in (_moved(load, live, -1), _moved(load, would, +1))
                    )
                )
                return live

        return Router()


def _moved(load, replica: int, requests: int):
    """``load`` with one request (of that replica's average outstanding tokens) more or fewer on ``replica``."""
    moved = dataclasses.replace(
        load, running=load.running.copy(), outstanding_tokens=load.outstanding_tokens.copy()
    )
    n = int(load.queued[replica] + load.running[replica])
    if requests < 0 and moved.running[replica] == 0:
        return moved
    per_request = load.outstanding_tokens[replica] / max(n, 1)
    moved.running[replica] += requests
    moved.outstanding_tokens[replica] = max(moved.outstanding_tokens[replica] + requests * per_request, 0.0)
    return moved

"""``oserve serve`` assembled: plan or load the deployment, start its engines through the orchestrator, put the
gateway in front, run the controller, and take manual switches on ``POST /admin/deployment`` (``oserve deploy``).

Shutdown (SIGTERM / SIGINT, or ``Server.stop``): the controller stops, the gateway stops listening and lets the
requests in flight finish (up to ``gateway.shutdown_grace_s``), then every engine is stopped (each finishes what
it holds first).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from oserve.adapt.switch import COLD_RESTART_S
from oserve.errors import ConfigError
from oserve.planner import Slo, default_slo, parse_rates, parse_slo_targets, plan
from oserve.planner.demand import demands_on_grid
from oserve.planner.slo_classes import parse_slo_classes
from oserve.runtime.auth import is_loopback, new_secret
from oserve.runtime.config import ServeConfig
from oserve.runtime.controller import Controller, ControllerConfig
from oserve.runtime.engine.launch import EngineBackend, make_backend
from oserve.runtime.orchestrator import ApplyReport, Orchestrator, make_orchestrator
from oserve.runtime.server import start_site, stop_signal
from oserve.spec import Deployment, get_model, parse_cluster
from oserve.trace import TypeGrid

__all__ = ["Server", "parse_slo_text"]

log = logging.getLogger(__name__)

EMULATED_RESTART_S = 1.0  # an emulated engine starts in about a second (no weights, no CUDA graphs)


def parse_slo_text(text: str, default: Slo) -> Slo:
    """``auto`` or ``ttft=S[+S/tok],tpot=S[,e2e=S]`` (keys left out take ``default``'s)."""
    given = parse_slo_targets(text)
    values = default.to_dict()
    if "ttft_s" in given:  # a TTFT given without a per-token part means a flat target
        values.pop("ttft_per_token_s", None)
    return Slo.from_dict({**values, **given})


class Server:
    """One serving process: orchestrator, gateway and controller over one deployment of one model."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        loaded = Deployment.load(config.deployment) if config.deployment else None
        # a deployment file names its model; it wins over the config's default
        self.model = get_model(loaded.model if loaded is not None and loaded.model else config.model)
        self.cluster = parse_cluster(config.cluster)
        self.classes = parse_slo_classes(config.slo, default_slo(self.model, self.cluster))
        self.slo = self.classes.default
        demands, rates_grid = parse_rates(config.rates)
        if config.prompt_edges is not None or config.output_edges is not None:  # the user's types
            rates_grid = TypeGrid(
                tuple(config.prompt_edges if config.prompt_edges is not None else rates_grid.prompt_edges),
                tuple(config.output_edges if config.output_edges is not None else rates_grid.output_edges),
            )
            demands = demands_on_grid(demands, rates_grid)
        per_type = {
            d.name: self.classes.slo_of(self.classes.assign_one(round(d.prompt_tokens)))
            for d in demands
            if not self.classes.single
        }
        if loaded is not None:
            self.initial = loaded
            self.planned_note = f"loaded {config.deployment}"
        else:
            result = plan(
                self.model,
                self.cluster,
                demands,
                self.slo,
                grid=rates_grid,
                pps=config.controller.pps,
                type_slos=per_type,
            )
            self.initial = result.deployment
            self.planned_note = f"planned for {config.rates} (alpha {result.alpha:.2f})"
            if result.best_effort:
                self.planned_note += "; best-effort: " + ", ".join(b.type for b in result.best_effort)
        edges = self.initial.type_edges
        self.grid = TypeGrid.from_edges(edges) if edges is not None else rates_grid
        # the secret engines require of /v1/*: only this gateway knows it, so clients cannot go around it
        self.engine_key = new_secret()
        self.backend = self._backend()
        o = config.orchestrator
        params: dict[str, Any] = {
            "model": self.model,
            "cluster": self.cluster,
            "log_dir": o.log_dir,
            "host": o.engine_host,
            "drain_timeout_s": o.drain_timeout_s,
            "stop_grace_s": o.stop_grace_s,
            "min_serving_fraction": o.min_serving_fraction,
        }
        if o.name == "ray":
            params["address"] = o.ray_address
            if config.backend.name == "emulated":
                params["num_gpus"] = self.cluster.num_gpus
        self.orchestrator: Orchestrator = make_orchestrator(o.name, self.backend, **params)
        self.gateway: Any = None
        self.controller: Controller | None = None
        self._runner: web.AppRunner | None = None
        self._controller_task: asyncio.Task | None = None
        self._proxy_idle: Callable[[], Awaitable[None]] | None = None
        self.port = 0

    def _backend(self) -> EngineBackend:
        b = self.config.backend
        served = self.model.name
        timeout = {"startup_timeout_s": b.startup_timeout_s} if b.startup_timeout_s else {}
        if b.name == "vllm":
            target = b.vllm_model or self.model.hf_id
            if not target:
                raise ConfigError(f"model {self.model.name} has no Hugging Face id; set backend.vllm_model")
            return make_backend(
                "vllm",
                model=target,
                served_model_name=served,
                extra_args=tuple(b.extra_args),
                executable=b.vllm_executable,
                api_key=self.engine_key,
                **timeout,
            )
        return make_backend(
            "emulated",
            model=self.model.name,
            served_model_name=served,
            speed=b.speed,
            api_key=self.engine_key,
            **timeout,
        )

    @property
    def url(self) -> str:
        host = self.config.gateway.host
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{self.port}"

    async def start(self) -> ApplyReport:
        """Start the engines, then the gateway and the controller; returns the first apply's report."""
        from oserve.runtime.admin import AdminApi
        from oserve.runtime.gateway import Gateway, GatewayLimits, make_gateway_app
        from oserve.runtime.gateway.app import PROXY_KEY

        report = await self.orchestrator.apply(self.initial)
        current = self.orchestrator.current()
        assert current is not None
        g = self.config.gateway
        try:
            limits = GatewayLimits(
                max_inflight_per_replica=g.max_inflight_per_replica,
                max_body_bytes=g.max_body_bytes,
                read_timeout_s=g.read_timeout_s,
                max_inflight=g.max_inflight,
                body_timeout_s=g.body_timeout_s,
                hold_timeout_s=g.hold_timeout_s,
                max_held=g.max_held,
                max_queued=g.max_queued,
                queue_timeout_s=g.queue_timeout_s,
                probe_interval_s=g.probe_interval_s,
                probe_timeout_s=g.probe_timeout_s,
            )
            self.gateway = Gateway(
                current,
                self.orchestrator.endpoints(),
                grid=self.grid,
                limits=limits,
                upstream_api_key=self.engine_key,
                classes=self.classes,
                clock=self._clock,
            )
            self.gateway.plan_state = self._plan_state
            self.orchestrator.attach(self.gateway)
            app = make_gateway_app(self.gateway, AdminApi(self).routes(), api_key=g.api_key)
            self._proxy_idle = app[PROXY_KEY].wait_idle
            self._runner = web.AppRunner(
                app,
                handle_signals=False,
                shutdown_timeout=g.shutdown_grace_s,
                handler_cancellation=True,  # a client that leaves aborts its request upstream too
                keepalive_timeout=g.keepalive_timeout_s,
            )
            await self._runner.setup()
            await start_site(self._runner, g.host, g.port, backlog=g.backlog)
            self.port = int(self._runner.addresses[0][1])
        except BaseException:
            await self.orchestrator.shutdown()
            raise
        c = self.config.controller
        self.controller = Controller(
            self.orchestrator,
            self.gateway.observed_counts,
            model=self.model,
            cluster=self.cluster,
            grid=self.grid,
            slo=self.slo,
            ledger=self.gateway.ledger,
            router=self.gateway.router_spec,
            clock=self._clock,
            time_scale=self._time_scale(),
            config=ControllerConfig(
                window_s=c.window_s,
                history_windows=c.history_windows,
                min_history_windows=c.min_history_windows,
                horizon_windows=c.horizon_windows,
                forecaster=c.forecaster,
                min_gain=c.min_gain,
                min_interval_s=c.min_interval_s,
                health_interval_s=c.health_interval_s,
                tps=tuple(c.tps),
                pps=tuple(c.pps),
                restart_s=self._restart_s(),
                verify_s=c.verify_s,
                verify_margin=c.verify_margin,
            ),
        )
        self._controller_task = asyncio.create_task(self.controller.run(adapt=c.enabled))
        return report

    def exposure_warnings(self) -> list[str]:
        """What is reachable beyond this machine without a credential."""
        g = self.config.gateway
        if is_loopback(g.host):
            return []
        out = []
        if not g.api_key:
            out.append(f"the OpenAI API on {g.host} needs no key: set --api-key or OSERVE_API_KEY")
        if g.insecure_admin and not g.admin_token:
            out.append(f"the admin API on {g.host} needs no token (--insecure-admin): anyone can switch it")
        return out

    def _plan_state(self) -> tuple[Deployment | None, bool]:
        orch = self.orchestrator
        return getattr(orch, "planned", None) or orch.current(), bool(getattr(orch, "switching", False))

    def _time_scale(self) -> float:
        """Controller clock seconds per wall second: the emulated engines' speed on ``controller.clock:
        engine``, else 1."""
        backend = self.config.backend
        engine_clock = self.config.controller.clock == "engine" and backend.name == "emulated"
        return backend.speed if engine_clock else 1.0

    def _clock(self) -> float:
        """The controller's and the gateway ledger's clock (``_time_scale`` times the monotonic clock)."""
        return time.monotonic() * self._time_scale()

    def _restart_s(self) -> float:
        """The engine start a switch is priced at: the config's, else the backend's own."""
        given = self.config.controller.restart_s
        if given is not None:
            return given
        return COLD_RESTART_S if self.config.backend.name == "vllm" else EMULATED_RESTART_S

    async def apply(self, deployment: Deployment) -> ApplyReport:
        """A manual switch (``oserve deploy``): the controller holds it until ``release``."""
        report = await self.orchestrator.apply(deployment)
        if self.controller is not None:
            self.controller.pin(f"deployed by hand: {report.deployment.describe()}")
        return report

    async def run_until_signal(self, *, ready: Callable[[ApplyReport], None] | None = None) -> None:
        """Start, call ``ready`` with the first apply's report, serve until SIGTERM or SIGINT, then stop
        gracefully (``runtime.server.stop_signal``)."""
        async with stop_signal() as stop:
            try:
                report = await self.start()
                if ready is not None:
                    ready(report)
                await stop.wait()
            finally:
                await self.stop()

    def release(self) -> bool:
        """``oserve deploy --release``: the controller may switch again; False when nothing was pinned."""
        if self.controller is None or self.controller.pinned is None:
            return False
        self.controller.release()
        return True

    async def stop(self) -> None:
        """Controller off, gateway drained (requests in flight finish), engines stopped."""
        if self._controller_task is not None:
            self._controller_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._controller_task
            self._controller_task = None
        if self._runner is not None:
            # new requests get 503, the listening socket closes, requests in flight finish (bounded)
            self.gateway.draining = True
            for site in list(self._runner.sites):
                await site.stop()
            if self._proxy_idle is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._proxy_idle(), self.config.gateway.shutdown_grace_s)
            await self._runner.cleanup()
            self._runner = None
        await self.orchestrator.shutdown()

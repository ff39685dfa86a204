"""``Gateway``: the live routing state in front of the replicas — the route table the controller swaps, the
request typing, the per-replica accounting it reads back, and the upstream HTTP session.

The controller's side of the contract: ``set_routes(deployment, endpoints)`` swaps the table atomically (new
requests follow the new weights; requests in flight finish on the replica they are on), ``inflight(name)`` tells
when a drained replica is empty, and ``observed_counts()`` gives cumulative arrivals per type for the forecaster.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import aiohttp

from oserve.errors import ConfigError
from oserve.planner.slo_classes import DEFAULT_CLASS, SloClasses
from oserve.runtime.gateway.admission import AdmissionQueue
from oserve.runtime.gateway.classify import OnlineClassifier
from oserve.runtime.gateway.ledger import Ledger
from oserve.runtime.gateway.metrics import GatewayMetrics
from oserve.runtime.gateway.routes import ReplicaLoad, RouteTable, grid_of
from oserve.spec.deployment import Deployment
from oserve.spec.router import DEFAULT_ROUTER, RouterSpec
from oserve.trace.classify import LiveClassifier, TypeGrid

__all__ = ["Gateway", "GatewayLimits"]


@dataclass(frozen=True, slots=True)
class GatewayLimits:
    """Backpressure, size and retry knobs."""

    max_inflight_per_replica: int = (
        256  # a replica with this many requests in flight takes no more (429 if all do)
    )
    max_body_bytes: int = 4 << 20  # larger request bodies get 413
    max_prompt_tokens: int | None = None  # by the estimate; None: the replicas' context length decides
    max_attempts: int = 3  # replicas tried per request on connection failures and 5xx before the first byte
    retry_after_s: int = 1  # Retry-After of a 429 / 503
    down_cooldown_s: float = 2.0  # a replica that refused a connection is skipped this long
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 600.0  # longest silence from a replica (before its answer, between stream chunks)
    max_inflight: int = 16384  # requests in the gateway at once; beyond: 429
    body_timeout_s: float = 30.0  # longest a client may take to send its body (slow clients hold sockets)
    hold_timeout_s: float = 30.0  # longest a request waits while no replica can be routed (a switch's gap)
    max_held: int = 4096  # requests waiting at once for a replica; beyond: 503
    max_queued: int = 4096  # requests waiting at once for a slot while every replica is full; beyond: 429
    queue_timeout_s: float = 30.0  # longest a request waits for a slot; then 429 (0: refuse at once)
    probe_interval_s: float = 1.0  # replica /health probe period (0 off); a missed probe marks it hung
    probe_timeout_s: float = 2.0

    def __post_init__(self) -> None:
        for name in (
            "max_inflight_per_replica", "max_body_bytes", "max_attempts", "retry_after_s", "max_inflight"
        ):  # fmt: skip
            if getattr(self, name) < 1:
                raise ConfigError(f"gateway {name} must be >= 1, got {getattr(self, name)}")
        if self.max_prompt_tokens is not None and self.max_prompt_tokens < 1:
            raise ConfigError(f"gateway max_prompt_tokens must be >= 1, got {self.max_prompt_tokens}")
        if self.down_cooldown_s < 0 or not self.connect_timeout_s > 0 or not self.read_timeout_s > 0:
            raise ConfigError(
                "gateway down_cooldown_s must be >= 0, connect_timeout_s and read_timeout_s > 0"
            )
        waits = (
            self.hold_timeout_s,
            self.max_held,
            self.max_queued,
            self.queue_timeout_s,
            self.probe_interval_s,
        )
        if min(waits) < 0:
            raise ConfigError(
                "gateway hold_timeout_s, max_held, max_queued, queue_timeout_s and probe_interval_s must be >= 0"
            )
        if not self.body_timeout_s > 0 or not self.probe_timeout_s > 0:
            raise ConfigError("gateway body_timeout_s and probe_timeout_s must be > 0")


class Gateway:
    """Routes OpenAI requests for one model over a deployment's replicas (``endpoints``: replica name -> base
    URL such as ``http://127.0.0.1:8001``). ``grid`` types requests (default: the deployment's ``type_edges``);
    ``classifier`` seeds the output-length estimate (e.g. ``LiveClassifier.fit`` on a trace); ``router`` is a
    name from ``oserve.routing.ROUTERS``; ``classes`` are the SLO classes requests are tagged with (the
    ``x-oserve-class`` header, else the body's ``metadata.oserve_class``, else the prompt rules, else the default
    class; ``planner.slo_classes``) and counted per class; ``clock`` times the ledger's requests (the live
    controller's clock). Serve it with ``make_gateway_app``."""

    def __init__(
        self,
        deployment: Deployment,
        endpoints: Mapping[str, str],
        *,
        grid: TypeGrid | None = None,
        classifier: LiveClassifier | None = None,
        router: str | None = None,
        served_model_name: str | None = None,
        limits: GatewayLimits | None = None,
        upstream_api_key: str | None = None,
        classes: SloClasses | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # an explicit router wins, then the deployment's (with its parameters), then the default
        if router is not None:
            spec = RouterSpec(router)
        else:
            spec = deployment.router if deployment.router is not None else RouterSpec(DEFAULT_ROUTER)
        self.limits = limits or GatewayLimits()
        self.router_spec = spec
        self.model_name = served_model_name or deployment.model
        if not self.model_name:
            raise ConfigError("the gateway needs a model name (the deployment's model or served_model_name)")
        self._fixed_grid = grid
        grid = grid or grid_of(deployment)
        if classifier is not None and classifier.grid != grid:
            raise ConfigError("the classifier's type grid differs from the gateway's")
        self.classifier = OnlineClassifier(grid, classifier)
        # requests waiting for a slot while every replica is full
        self.admission = AdmissionQueue(self.limits.max_queued)
        self.metrics = GatewayMetrics(grid.names, self._inflight_by_replica, self.admission)
        self._loads: dict[str, ReplicaLoad] = {}
        self._counts: dict[str, int] = dict.fromkeys(grid.names, 0)
        self._type_names = grid.names
        self.classes = classes
        self._class_counts: dict[str, int] = dict.fromkeys(classes.names if classes else (DEFAULT_CLASS,), 0)
        self.table = self._table(deployment, endpoints, grid)
        self.session: aiohttp.ClientSession | None = None
        self.draining = False
        self.requests_in_flight = 0  # in the gateway's handlers (for the drain)
        self.held = 0  # requests waiting for a routable replica
        # the replicas' key (the per-serve secret the engines require); never the client's Authorization
        self.upstream_headers = {"Content-Type": "application/json"}
        if upstream_api_key:
            self.upstream_headers["Authorization"] = f"Bearer {upstream_api_key}"
        self.paused: str | None = None  # why no replica is routed (a switch's gap), None when routed
        self._routes_changed = asyncio.Event()
        # (the deployment planned, whether a switch is under way) for /health; None: the table's own
        self.plan_state: Callable[[], tuple[Deployment | None, bool]] | None = None
        self._prober: asyncio.Task | None = None
        self.ledger = Ledger(clock)  # requests in flight and recent ones, for the controller core (its clock)

    @property
    def router_name(self) -> str:
        """The registered name of the router every route table uses."""
        return self.router_spec.type

    def _table(self, deployment: Deployment, endpoints: Mapping[str, str], grid: TypeGrid) -> RouteTable:
        return RouteTable(
            deployment, endpoints, grid, self.router_spec, self._loads, self.limits.max_inflight_per_replica
        )

    # -- the controller's interface ---------------------------------------------------------------------------
    def set_routes(self, deployment: Deployment, endpoints: Mapping[str, str]) -> None:
        """Swap in a new deployment: new requests route by its weights at once; requests in flight finish on
        the replica they are on (``inflight(name)`` counts them). Raises ``ConfigError`` before changing
        anything when a replica has no endpoint."""
        grid = self._fixed_grid or grid_of(deployment)
        table = self._table(deployment, endpoints, grid)
        if grid != self.classifier.grid:
            self.classifier = OnlineClassifier(grid)
            self._type_names = grid.names
            for name in grid.names:
                self._counts.setdefault(name, 0)
            self.metrics.set_types(grid.names)
        self.table = table
        self.paused = None
        self._wake()
        self.admission.wake_all()  # the new replicas may have room
        self.metrics.switches.inc()
        for name in [n for n, load in self._loads.items() if load.inflight == 0 and n not in table.index]:
            del self._loads[name]

    def pause(self, reason: str) -> None:
        """No replica can serve for a while (every running one stops before the next starts): new requests wait
        (at most ``hold_timeout_s``, ``max_held`` of them) instead of failing; ``set_routes`` ends the pause."""
        self.paused = reason

    def _wake(self) -> None:
        self._routes_changed.set()
        self._routes_changed = asyncio.Event()

    async def wait_for_routes(self, timeout_s: float) -> None:
        """Until the routes change or a replica comes back from its cooldown (polled), at most ``timeout_s``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._routes_changed.wait(), min(timeout_s, 0.05))

    def health(self) -> tuple[int, dict]:
        """``/health``: 200 ok (or switching), 503 draining or degraded with the reason."""
        if self.draining:
            return 503, {"status": "draining"}
        table = self.table
        if self.paused is not None:
            return 503, {"status": "degraded", "reason": f"no replica routed: {self.paused}", "replicas": 0}
        now = time.monotonic()
        up = [
            r
            for r, load in zip(table.deployment.replicas, table.loads, strict=True)
            if load.down_until_s <= now
        ]
        down = sorted(set(table.names) - {r.name for r in up})
        planned, switching = self.plan_state() if self.plan_state is not None else (None, False)
        plan_gpus = (planned or table.deployment).num_gpus
        up_gpus = sum(r.config.num_gpus for r in up)
        body = {"replicas": len(up), "gpus": up_gpus, "planned_gpus": plan_gpus, "down": down}
        if not up:
            return 503, {"status": "degraded", "reason": "no replica is answering", **body}
        if up_gpus < plan_gpus:
            reason = f"serving on {up_gpus} of {plan_gpus} planned GPUs"
            if switching:
                return 200, {"status": "switching", "reason": reason, **body}
            return 503, {
                "status": "degraded",
                "reason": reason + (f"; down: {', '.join(down)}" if down else ""),
                **body,
            }
        return 200, {"status": "ok", **body}

    def inflight(self, replica_name: str) -> int:
        """Requests the gateway has sent ``replica_name`` that have not finished (0 for an unknown name)."""
        load = self._loads.get(replica_name)
        return load.inflight if load is not None else 0

    def observed_counts(self) -> dict[str, int]:
        """Cumulative arrivals per type name: every well-formed request, including those refused for want of
        capacity (429, 502, 503), less those the engine rejected as invalid (a 4xx: no demand to plan for);
        types of earlier grids keep their counts."""
        return dict(self._counts)

    def observed_class_counts(self) -> dict[str, int]:
        """Cumulative arrivals per SLO class."""
        return dict(self._class_counts)

    def class_of(self, prompt_tokens: int, named: str | None) -> str:
        """The request's SLO class: the one it names when defined, else the prompt rules, else the default."""
        return self.classes.assign_one(prompt_tokens, named) if self.classes is not None else DEFAULT_CLASS

    def class_arrived(self, slo_class: str) -> None:
        self._class_counts[slo_class] = self._class_counts.get(slo_class, 0) + 1
        self.metrics.class_arrivals.labels(slo_class).inc()

    def class_done(
        self, slo_class: str, prompt_tokens: int, e2e_s: float, ttft_s: float | None, tpot_s: float | None
    ) -> None:
        """Count an answered request and whether it met its class's targets (those measured: TTFT and TPOT on
        streams, E2E always)."""
        slo = self.classes.slo_of(slo_class) if self.classes is not None else None
        met = slo is not None and (slo.e2e_s is None or e2e_s <= slo.e2e_s)
        if slo is not None and ttft_s is not None:
            met = met and ttft_s <= float(slo.ttft_target(prompt_tokens))
        if slo is not None and tpot_s is not None:
            met = met and tpot_s <= slo.tpot_s
        self.metrics.class_done(slo_class, met)

    @property
    def replicas(self) -> list[str]:
        return list(self.table.names)

    # -- used by the request path -----------------------------------------------------------------------------
    def _inflight_by_replica(self) -> dict[str, int]:
        return {n: load.inflight for n, load in self._loads.items()}

    def arrived(self, type_index: int) -> None:
        self._counts[self._type_names[type_index]] += 1
        self.metrics.arrived(type_index)

    def rejected(self, type_index: int) -> None:
        """The engine refused the request as invalid: take it back out of the demand (not out of the metric)."""
        name = self._type_names[type_index] if type_index < len(self._type_names) else None
        if name is not None and self._counts.get(name, 0) > 0:
            self._counts[name] -= 1

    async def start(self) -> None:
        """Open the upstream session (inside the serving loop)."""
        if self.session is None:
            lim = self.limits
            timeout = aiohttp.ClientTimeout(
                total=None, sock_connect=lim.connect_timeout_s, sock_read=lim.read_timeout_s
            )
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30.0)
            self.session = aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False)
        if self._prober is None and self.limits.probe_interval_s > 0:
            from oserve.runtime.gateway.probe import probe_forever

            self._prober = asyncio.create_task(probe_forever(self))

    async def close(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            await asyncio.gather(self._prober, return_exceptions=True)
            self._prober = None
        if self.session is not None:
            await self.session.close()
            self.session = None

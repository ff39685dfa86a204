"""The gateway's Prometheus metrics, on a registry of its own: per-type arrivals, TTFT / TPOT / E2E histograms per
type, per SLO class arrivals, completions and completions within the class's targets, requests in flight per
replica (read at scrape time), switches, retries and refusals."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from oserve.runtime.gateway.admission import AdmissionQueue

__all__ = ["GatewayMetrics"]

_LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0)
_TPOT_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)


class _InflightCollector(Collector):
    def __init__(self, read: Callable[[], dict[str, int]]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        g = GaugeMetricFamily(
            "oserve_gateway_inflight_requests",
            "Requests the gateway has in flight, per replica.",
            labels=["replica"],
        )
        for name, n in sorted(self._read().items()):
            g.add_metric([name], n)
        yield g


class _QueueCollector(Collector):
    """The admission queue's length and totals, read at scrape time (the request path only bumps ints)."""

    def __init__(self, queue: AdmissionQueue) -> None:
        self._queue = queue

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        q = self._queue
        yield GaugeMetricFamily(
            "oserve_gateway_queued_requests", "Requests waiting for a slot while every replica is full.",
            value=q.queued,
        )  # fmt: skip
        yield CounterMetricFamily(
            "oserve_gateway_queue_waits", "Requests that waited for a slot.", value=q.waited
        )
        yield CounterMetricFamily(
            "oserve_gateway_queue_timeouts", "Requests whose wait for a slot passed its deadline (429).",
            value=q.timed_out,
        )  # fmt: skip


class GatewayMetrics:
    """Counters and histograms the request path updates; children cached per type so an update is one call."""

    def __init__(
        self,
        type_names: list[str],
        inflight: Callable[[], dict[str, int]],
        queue: AdmissionQueue | None = None,
    ) -> None:
        self.registry = r = CollectorRegistry()
        self.arrivals = Counter(
            "oserve_gateway_arrivals", "Requests accepted for typing, per type.", ["type"], registry=r
        )
        self.ttft = Histogram(
            "oserve_gateway_ttft_seconds",
            "Time to first token (streaming).",
            ["type"],
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.tpot = Histogram(
            "oserve_gateway_tpot_seconds", "Time per output token after the first (streaming).", ["type"],
            buckets=_TPOT_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.e2e = Histogram(
            "oserve_gateway_e2e_seconds",
            "End-to-end latency.",
            ["type"],
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.switches = Counter(
            "oserve_gateway_switches", "Route-table swaps (deployment switches).", registry=r
        )
        self.retries = Counter(
            "oserve_gateway_retries", "Requests re-sent to another replica.", ["reason"], registry=r
        )
        self.refused = Counter(
            "oserve_gateway_refused", "Requests refused by the gateway, by status.", ["status"], registry=r
        )
        self.kv_handoffs = Counter(
            "oserve_gateway_kv_handoffs", "Requests prefilled in a P/D pool and handed to a decode replica.",
            registry=r,
        )  # fmt: skip
        self.stream_errors = Counter(
            "oserve_gateway_stream_errors", "Streams cut by a replica failure mid-stream.", registry=r
        )
        self.class_arrivals = Counter(
            "oserve_gateway_class_arrivals", "Requests accepted, per SLO class.", ["slo_class"], registry=r
        )
        self.class_completed = Counter(
            "oserve_gateway_class_completed", "Requests answered, per SLO class.", ["slo_class"], registry=r
        )
        self.class_slo_met = Counter(
            "oserve_gateway_class_slo_met",
            "Requests answered within every target of their SLO class that the gateway measures.",
            ["slo_class"],
            registry=r,
        )
        self._refused: dict[int, Counter] = {}
        r.register(_InflightCollector(inflight))
        if queue is not None:
            r.register(_QueueCollector(queue))
        self.set_types(type_names)

    def set_types(self, type_names: list[str]) -> None:
        """Cache the per-type children (type indices are positions in ``type_names``)."""
        self._arrivals = [self.arrivals.labels(t) for t in type_names]
        self._ttft = [self.ttft.labels(t) for t in type_names]
        self._tpot = [self.tpot.labels(t) for t in type_names]
        self._e2e = [self.e2e.labels(t) for t in type_names]

    def refuse(self, status: int) -> None:
        """Count a refusal by status (children cached: a refusal storm costs a dict lookup and an add each)."""
        child = self._refused.get(status)
        if child is None:
            child = self._refused[status] = self.refused.labels(str(status))
        child.inc()

    def arrived(self, type_index: int) -> None:
        self._arrivals[type_index].inc()

    def completed(self, type_index: int, e2e_s: float, ttft_s: float | None, tpot_s: float | None) -> None:
        self._e2e[type_index].observe(e2e_s)
        if ttft_s is not None:
            self._ttft[type_index].observe(ttft_s)
        if tpot_s is not None:
            self._tpot[type_index].observe(tpot_s)

    def class_done(self, slo_class: str, met: bool) -> None:
        self.class_completed.labels(slo_class).inc()
        if met:
            self.class_slo_met.labels(slo_class).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)

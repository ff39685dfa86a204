"""Capacity per fleet instance: the request rate one replica config of a model sustains, per tier.

An *instance* is one replica (``ReplicaConfig``: GPU type, TP, PP) of one model. Its capacity comes from the
planner's ``CapacityModel`` on the tier's length sample (real requests): IW at the IW SLO with 99 % of requests
meeting it, NIW at a throughput SLO (TTFT 30x, TPOT 5x the IW targets: it only has to finish within hours, so the
batch grows to what KV memory and ``max_num_seqs`` allow). Candidate configs are the planner's
``candidate_configs`` over the fleet's GPU types (one 8-GPU node each), unless the spec lists them. IW capacity is
then calibrated against the request-level simulator (``fleet.calibrate``): ``mu_iw_rps`` is the cost model's mu
times the share of it at which the simulator still meets the SLO for 99 % of IW requests.

The cost model is the slow part, so ``CapacityModel`` objects (and their memo) are kept per (model, SLO) for the
process: the benchmark's policies and sensitivity runs build the table once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from oserve.errors import ConfigError
from oserve.fleet.calibrate import iw_calibration
from oserve.fleet.spec import FleetSpec
from oserve.planner import CapacityModel, Slo, candidate_configs, default_slo
from oserve.spec import ReplicaConfig, parse_cluster

__all__ = ["IW_ATTAINMENT", "CapacityTable", "FleetConfig", "build_capacity_table", "length_sample"]

IW_ATTAINMENT = 0.99  # share of IW requests meeting the SLO at an instance's capacity
NIW_TTFT_SCALE, NIW_TPOT_SCALE = 30.0, 5.0
MAX_CONFIGS = 6
SAMPLE_SIZE = 16

_MODELS: dict[tuple, CapacityModel] = {}


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """One instance shape of one model with its capacity per tier (req/s; 0 = cannot serve that tier)."""

    model: int  # index into the fleet's models
    config: ReplicaConfig
    mu_iw_rps: float  # calibrated: the cost model's mu times ``iw_calibration``
    mu_niw_rps: float
    limit_iw: str
    iw_calibration: float = (
        1.0  # share of the cost model's IW mu the simulator confirms (``fleet.calibrate``)
    )
    mu_fill_rps: float | None = None  # NIW req/s beside IW, at the IW SLO (None: as ``mu_iw_rps``)

    @property
    def fill_rps(self) -> float:
        """NIW req/s that take up one instance's IW capacity when NIW runs beside IW (at the IW SLO)."""
        return self.mu_iw_rps if self.mu_fill_rps is None else self.mu_fill_rps

    @property
    def gpus(self) -> int:
        return self.config.num_gpus

    @property
    def label(self) -> str:
        return self.config.label.replace("H100-SXM-80GB", "H100")


@dataclass(frozen=True, slots=True)
class CapacityTable:
    """Every model's instance shapes, flattened (index ``j``), with the IW SLO each model was sized for."""

    configs: tuple[FleetConfig, ...]
    slos: tuple[Slo, ...]  # IW SLO per model
    gpu_names: tuple[str, ...]  # the fleet's GPU types; ``gpu_index`` points here
    fill_cap: float = 1.0  # IW and NIW together fill an IW instance to this share of its IW capacity

    @property
    def model_of(self) -> np.ndarray:
        return np.array([c.model for c in self.configs], dtype=np.int64)

    @property
    def gpus(self) -> np.ndarray:
        return np.array([c.gpus for c in self.configs], dtype=np.float64)

    @property
    def gpu_index(self) -> np.ndarray:
        return np.array([self.gpu_names.index(c.config.gpu.name) for c in self.configs], dtype=np.int64)

    @property
    def mu_iw(self) -> np.ndarray:
        return np.array([c.mu_iw_rps for c in self.configs])

    @property
    def mu_niw(self) -> np.ndarray:
        return np.array([c.mu_niw_rps for c in self.configs])

    @property
    def mu_fill(self) -> np.ndarray:
        return np.array([c.fill_rps for c in self.configs])

    def of_model(self, model: int) -> list[int]:
        return [j for j, c in enumerate(self.configs) if c.model == model]

    def homogeneous(self, prices: dict[str, float]) -> CapacityTable:
        """One shape per model, as SageServe deploys: the one serving IW at the lowest price per req/s."""
        keep = []
        for m in sorted({c.model for c in self.configs}):
            js = [j for j in self.of_model(m) if self.configs[j].mu_iw_rps > 0]
            keep.append(min(js, key=lambda j: self._price_per_rps(j, prices)))
        return replace(self, configs=tuple(self.configs[j] for j in keep))

    def siloed(self, prices: dict[str, float]) -> CapacityTable:
        """The homogeneous shape twice per model: an IW-only copy and an NIW-only copy (separate pools)."""
        out = []
        for c in self.homogeneous(prices).configs:
            out += [replace(c, mu_niw_rps=0.0, mu_fill_rps=0.0), replace(c, mu_iw_rps=0.0)]
        return replace(self, configs=tuple(out))

    def _price_per_rps(self, j: int, prices: dict[str, float]) -> float:
        c = self.configs[j]
        return c.gpus * prices.get(c.config.gpu.name, c.config.gpu.price_per_hour) / c.mu_iw_rps

    def to_dict(self, model_names: list[str]) -> dict[str, list[dict[str, object]]]:
        out: dict[str, list[dict[str, object]]] = {}
        for c in self.configs:
            out.setdefault(model_names[c.model], []).append(
                {
                    "config": c.label,
                    "gpus": c.gpus,
                    "iw_rps": c.mu_iw_rps,
                    "niw_rps": c.mu_niw_rps,
                    "iw_calibration": c.iw_calibration,
                }
            )
        return out


def length_sample(
    prompts: np.ndarray, outputs: np.ndarray, size: int = SAMPLE_SIZE
) -> tuple[np.ndarray, ...]:
    """Up to ``size`` requests at evenly spaced prompt-length quantiles (their outputs ride along), as the
    planner samples a type."""
    prompts, outputs = np.asarray(prompts, np.int64), np.asarray(outputs, np.int64)
    if prompts.size <= size:
        return prompts, outputs
    order = np.argsort(prompts, kind="stable")
    pick = order[((np.arange(size) + 0.5) * prompts.size / size).astype(np.int64)]
    return prompts[pick], outputs[pick]


def _capacity_model(spec, slo: Slo, attainment: float) -> CapacityModel:
    key = (spec, slo, attainment)
    capm = _MODELS.get(key)
    if capm is None:
        capm = _MODELS[key] = CapacityModel(spec, slo, attainment=attainment)
    return capm


def iw_slo(fleet: FleetSpec, model: int) -> Slo:
    """The spec's IW targets; ``auto`` ones from ``default_slo`` on one 8-GPU node of the fleet's first GPU type."""
    spec = fleet.models[model].spec
    base = default_slo(spec, parse_cluster(f"1x8x{fleet.gpu_types()[0].name}"))
    return Slo(fleet.iw_ttft_s or base.ttft_s, fleet.iw_tpot_s or base.tpot_s)


def _dominated(f: FleetConfig, others: list[FleetConfig]) -> bool:
    """Whether ``k`` instances of a smaller shape on the same GPUs serve both tiers at least as fast (TP8 against
    two TP4s, say): the MILP never needs ``f`` then, and is smaller without it."""
    for g in others:
        if g is f or g.config.gpu.name != f.config.gpu.name or f.gpus % g.gpus or g.gpus >= f.gpus:
            continue
        k = f.gpus // g.gpus
        if k * g.mu_iw_rps >= f.mu_iw_rps and k * g.mu_niw_rps >= f.mu_niw_rps:
            return True
    return False


def build_capacity_table(
    fleet: FleetSpec,
    lengths: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]],
    *,
    max_configs: int = MAX_CONFIGS,
    prune: bool = True,
    calibrate: bool = True,
) -> CapacityTable:
    """Capacity of every (model, config) per tier on ``lengths[(model, tier)]`` = (prompts, outputs) in tokens;
    ``prune`` drops shapes dominated by several instances of a smaller one on the same GPUs; ``calibrate``
    scales IW capacity to what the request-level simulator confirms (``fleet.calibrate``, ~1-5 s a shape)."""
    gpus = fleet.gpu_types()
    node_cluster = parse_cluster("+".join(f"1x8x{g.name}" for g in gpus))
    prices = {g.name: g.price_per_hour for g in gpus}
    for r in fleet.regions:
        for p in r.pools:
            prices[p.gpu.name] = p.price_per_hour
    rows: list[FleetConfig] = []
    slos = []
    for m, fm in enumerate(fleet.models):
        slo = iw_slo(fleet, m)
        slos.append(slo)
        niw_slo = Slo(slo.ttft_s * NIW_TTFT_SCALE, slo.tpot_s * NIW_TPOT_SCALE)
        configs = list(fm.configs)
        if not configs:
            configs, reasons = candidate_configs(fm.spec, node_cluster, pps=(1,))
            if not configs:
                raise ConfigError(
                    f"{fm.name} fits no replica shape on the fleet's GPUs: " + "; ".join(reasons)
                )
        iw_p, iw_o = length_sample(*lengths[(m, "iw")])
        niw_p, niw_o = length_sample(*lengths[(m, "niw")])
        iw_cap = _capacity_model(fm.spec, slo, IW_ATTAINMENT)
        niw_cap = _capacity_model(fm.spec, niw_slo, 0.9)
        found = []
        for c in configs:
            a, b = iw_cap.capacity(c, iw_p, iw_o), niw_cap.capacity(c, niw_p, niw_o)
            if a.rate_rps > 0 or b.rate_rps > 0:
                found.append(FleetConfig(m, c, a.rate_rps, b.rate_rps, a.limit))
        if prune:
            found = [f for f in found if not _dominated(f, found)]
        if calibrate:
            found = [
                _calibrated(f, fm.spec, slo, lengths[(m, "iw")], iw_cap.capacity(f.config, niw_p, niw_o))
                for f in found
            ]
        if not any(f.mu_iw_rps > 0 for f in found):
            raise ConfigError(
                f"no replica config of {fm.name} meets the IW SLO ({slo.describe()}) on the fleet's GPUs; "
                "loosen tiers.iw or add faster GPUs"
            )

        def value(f: FleetConfig) -> float:  # best of the two tiers' req/s per dollar
            price = f.gpus * prices[f.config.gpu.name]
            return max(f.mu_iw_rps, f.mu_niw_rps) / max(price, 1e-9)

        best_iw = max((f for f in found if f.mu_iw_rps > 0), key=lambda f: f.mu_iw_rps / f.gpus)
        kept = sorted(found, key=value, reverse=True)[:max_configs]
        if best_iw not in kept:
            kept[-1] = best_iw
        rows += sorted(kept, key=lambda f: (f.config.gpu.name, f.config.tp, f.config.pp))
    return CapacityTable(tuple(rows), tuple(slos), tuple(g.name for g in gpus), fleet.niw_fill_cap)


def _calibrated(f: FleetConfig, spec, slo: Slo, iw_lengths, fill) -> FleetConfig:
    """``f`` with its IW capacity (and NIW's beside IW) scaled to what the simulator confirms."""
    share = iw_calibration(spec, f.config, slo, *iw_lengths, f.mu_iw_rps, target=IW_ATTAINMENT)
    return replace(f, mu_iw_rps=f.mu_iw_rps * share, iw_calibration=share, mu_fill_rps=fill.rate_rps * share)

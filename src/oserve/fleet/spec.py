"""The fleet spec: regions with GPU pools, the models they serve, and the two SLA tiers (YAML, validated).

::

    regions:
      - name: us-east
        utc_offset_h: -5          # local time = UTC + offset (drives the diurnal envelope of the built-in scenario)
        scale_out_lead_min: 10    # request -> GPUs allocated (not billed while waiting)
        model_load_min: 3         # allocated -> serving (billed, not serving)
        pools:
          - {gpu: H100, on_demand: 256, spot: 64, price_per_hour: 6.9, spot_price_per_hour: 2.8,
             spot_eviction_per_h: 0.005}   # share of the spot GPUs in use reclaimed an hour
    latency_ms: {us-east: {us-west: 65, eu-west: 75}}   # symmetric; a region to itself is 0
    models:
      - {name: llama-3-8b, configs: [H100:tp1, H100:tp2], load_min: 1}   # configs / load_min optional
    tiers:
      iw: {ttft_s: auto, tpot_s: auto, max_route_latency_ms: 100}       # auto: planner.default_slo
      niw: {deadline_h: 8, fill_cap: 0.9}   # fill_cap: NIW fills an instance serving IW only to this share
    objective: cost               # or gpu_hours

Errors name the file and the field (``fleet.yaml: regions[0].pools[1].on_demand: ...``) and raise ``ConfigError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from oserve.errors import ConfigError, OServeError
from oserve.files import read_structured
from oserve.spec import GpuSpec, ModelSpec, ReplicaConfig, get_gpu, get_model

__all__ = ["FleetModel", "FleetSpec", "GpuPool", "Region", "builtin_fleet", "load_fleet", "parse_config"]

SPOT_DISCOUNT = 0.4  # default spot price as a share of on-demand (typical 2025 cloud spot rates: 30-50 %)
# IW and NIW together fill an instance that serves IW to at most this share of its (calibrated) IW capacity;
# IW alone may use all of it. Replayed in the simulator, 0.9 keeps IW above 99 % (docs/fleet.md).
NIW_FILL_CAP = 0.9
# Spot GPUs reclaimed per hour, as a share of those in use. AWS's Spot Instance Advisor puts H100 (p5) at 10-20 %
# of instances interrupted a month (~0.03 % an hour); the default is a stress well above it (11 % a day).
SPOT_EVICTION_PER_H = 0.005


@dataclass(frozen=True, slots=True)
class GpuPool:
    gpu: GpuSpec
    on_demand: int  # GPUs
    spot: int  # GPUs
    price_per_hour: float  # USD per on-demand GPU-hour
    spot_price_per_hour: float  # USD per spot GPU-hour
    spot_eviction_per_h: float = 0.0  # share of the spot GPUs in use the provider reclaims per hour

    @property
    def gpus(self) -> int:
        return self.on_demand + self.spot


@dataclass(frozen=True, slots=True)
class Region:
    name: str
    utc_offset_h: float
    scale_out_lead_min: float
    model_load_min: float
    pools: tuple[GpuPool, ...]

    def pool(self, gpu_name: str) -> GpuPool | None:
        return next((p for p in self.pools if p.gpu.name == gpu_name), None)


@dataclass(frozen=True, slots=True)
class FleetModel:
    spec: ModelSpec
    configs: tuple[ReplicaConfig, ...]  # empty: every shape the planner's candidate_configs finds
    load_min: float | None  # None: the region's model_load_min

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True, slots=True)
class FleetSpec:
    regions: tuple[Region, ...]
    models: tuple[FleetModel, ...]
    latency_ms: tuple[tuple[float, ...], ...]  # regions x regions, symmetric, 0 on the diagonal
    iw_ttft_s: float | None  # None: default_slo
    iw_tpot_s: float | None
    max_route_latency_ms: float
    niw_deadline_h: float
    objective: str  # "cost" | "gpu_hours"
    niw_fill_cap: float = NIW_FILL_CAP  # share of an IW instance's capacity that IW and NIW together may use

    @property
    def region_names(self) -> list[str]:
        return [r.name for r in self.regions]

    @property
    def model_names(self) -> list[str]:
        return [m.name for m in self.models]

    def gpu_types(self) -> list[GpuSpec]:
        seen: dict[str, GpuSpec] = {}
        for r in self.regions:
            for p in r.pools:
                seen.setdefault(p.gpu.name, p.gpu)
        return list(seen.values())

    def load_min(self, region: int, model: int) -> float:
        own = self.models[model].load_min
        return self.regions[region].model_load_min if own is None else own


# ---- the file format (pydantic at the edge) -------------------------------------------------------------------


class _Pool(BaseModel):
    model_config = ConfigDict(extra="forbid")
    gpu: str
    on_demand: int = Field(ge=0, description="on-demand GPUs")
    spot: int = Field(0, ge=0, description="spot GPUs")
    price_per_hour: float | None = Field(None, ge=0)
    spot_price_per_hour: float | None = Field(None, ge=0)
    spot_eviction_per_h: float = Field(SPOT_EVICTION_PER_H, ge=0, le=1, description="share reclaimed an hour")

    @field_validator("gpu")
    @classmethod
    def _known(cls, value: str) -> str:
        get_gpu(value)
        return value


class _Region(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    utc_offset_h: float = Field(0.0, ge=-12, le=14)
    scale_out_lead_min: float = Field(10.0, ge=0, le=24 * 60)
    model_load_min: float = Field(3.0, ge=0, le=24 * 60)
    pools: list[_Pool] = Field(min_length=1)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, description="catalogue name or a config.json path")
    configs: list[str] = Field(default_factory=list, description="GPU:tpN[ppM] shapes it may use")
    load_min: float | None = Field(None, ge=0)


class _Iw(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ttft_s: float | Literal["auto"] = "auto"
    tpot_s: float | Literal["auto"] = "auto"
    max_route_latency_ms: float = Field(100.0, ge=0)

    @field_validator("ttft_s", "tpot_s")
    @classmethod
    def _positive(cls, value: float | str) -> float | str:
        if value != "auto" and not float(value) > 0:
            raise ValueError("must be a positive number of seconds or 'auto'")
        return value


class _Niw(BaseModel):
    model_config = ConfigDict(extra="forbid")
    deadline_h: float = Field(8.0, gt=0, le=168)
    fill_cap: float = Field(NIW_FILL_CAP, gt=0, le=1, description="share of an IW instance NIW may fill to")


class _Tiers(BaseModel):
    model_config = ConfigDict(extra="forbid")
    iw: _Iw = Field(default_factory=_Iw)
    niw: _Niw = Field(default_factory=_Niw)


class _Fleet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    regions: list[_Region] = Field(min_length=1)
    latency_ms: dict[str, dict[str, float]] = Field(default_factory=dict)
    models: list[_Model] = Field(min_length=1)
    tiers: _Tiers = Field(default_factory=_Tiers)
    objective: Literal["cost", "gpu_hours"] = "cost"


def parse_config(text: str, gpus: dict[str, GpuSpec] | None = None) -> ReplicaConfig:
    """``H100:tp4`` / ``A100-80GB:tp2pp2`` (the ``ReplicaConfig.label`` spelling) -> the config."""
    gpu_part, sep, shape = text.strip().partition(":")
    shape = shape.strip().lower()
    if not sep or not shape.startswith("tp"):
        raise ConfigError(f"config {text!r}: expected GPU:tpN or GPU:tpNppM, e.g. H100:tp4")
    tp_text, _, pp_text = shape[2:].partition("pp")
    try:
        tp, pp = int(tp_text), int(pp_text or 1)
    except ValueError:
        raise ConfigError(f"config {text!r}: TP and PP must be integers, e.g. H100:tp4pp2") from None
    gpu = get_gpu(gpu_part)
    if gpus is not None:
        gpu = gpus.get(gpu.name, gpu)
    return ReplicaConfig(gpu, tp=tp, pp=pp)


def _problems(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors():
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"]).lstrip(".")
        parts.append(f"{loc or 'fleet'}: {e['msg']}")
    return "; ".join(parts)


def fleet_from_dict(data: Any, source: str = "fleet") -> FleetSpec:
    """Validate a parsed fleet mapping; every problem raises ``ConfigError`` naming ``source`` and the field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with regions, models and tiers")
    try:
        raw = _Fleet.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_problems(exc)}") from exc
    except OServeError as exc:  # an unknown GPU inside a validator
        raise ConfigError(f"{source}: {exc}") from exc
    names = [r.name for r in raw.regions]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: regions: duplicate region names in {names}")
    regions = []
    for i, r in enumerate(raw.regions):
        pools, seen = [], set()
        for j, p in enumerate(r.pools):
            gpu = get_gpu(p.gpu)
            if gpu.name in seen:
                raise ConfigError(f"{source}: regions[{i}].pools[{j}]: a second {gpu.name} pool in {r.name}")
            seen.add(gpu.name)
            price = gpu.price_per_hour if p.price_per_hour is None else p.price_per_hour
            spot_price = SPOT_DISCOUNT * price if p.spot_price_per_hour is None else p.spot_price_per_hour
            pools.append(GpuPool(gpu, p.on_demand, p.spot, price, spot_price, p.spot_eviction_per_h))
        if sum(p.gpus for p in pools) == 0:
            raise ConfigError(f"{source}: regions[{i}] ({r.name}) has no GPUs in any pool")
        regions.append(Region(r.name, r.utc_offset_h, r.scale_out_lead_min, r.model_load_min, tuple(pools)))
    latency = [[0.0] * len(names) for _ in names]
    for a, row in raw.latency_ms.items():
        for b, ms in row.items():
            for end in (a, b):
                if end not in names:
                    raise ConfigError(
                        f"{source}: latency_ms.{a}.{b}: unknown region {end!r}; regions: {names}"
                    )
            if not ms >= 0:
                raise ConfigError(f"{source}: latency_ms.{a}.{b}: must be >= 0 ms, got {ms}")
            i, j = names.index(a), names.index(b)
            if i != j:
                latency[i][j] = latency[j][i] = float(ms)
    gpus = {g.name: g for g in (p.gpu for r in regions for p in r.pools)}
    models, seen_models = [], set()
    for i, m in enumerate(raw.models):
        try:
            spec = get_model(m.name)
            configs = tuple(parse_config(c, gpus) for c in m.configs)
        except OServeError as exc:
            raise ConfigError(f"{source}: models[{i}]: {exc}") from exc
        if spec.name in seen_models:
            raise ConfigError(f"{source}: models[{i}]: {spec.name} is listed twice")
        seen_models.add(spec.name)
        for c in configs:
            if c.gpu.name not in gpus:
                raise ConfigError(
                    f"{source}: models[{i}].configs: {c.label} needs {c.gpu.name} GPUs, which no region has "
                    f"(pools: {', '.join(gpus)})"
                )
        models.append(FleetModel(spec, configs, m.load_min))
    iw = raw.tiers.iw
    return FleetSpec(
        tuple(regions),
        tuple(models),
        tuple(tuple(row) for row in latency),
        None if iw.ttft_s == "auto" else float(iw.ttft_s),
        None if iw.tpot_s == "auto" else float(iw.tpot_s),
        iw.max_route_latency_ms,
        raw.tiers.niw.deadline_h,
        raw.objective,
        raw.tiers.niw.fill_cap,
    )


def load_fleet(path: str | Path) -> FleetSpec:
    """A fleet spec from a YAML (or JSON) file."""
    data = read_structured(path, what="fleet spec", error=ConfigError)
    return fleet_from_dict(data, str(path))


#: The built-in fleet: three regions, four catalogue models, H100s with some A100s (docs/fleet.md).
BUILTIN_FLEET: dict[str, Any] = {
    "regions": [
        {
            "name": "us-east",
            "utc_offset_h": -5,
            "scale_out_lead_min": 10,
            "model_load_min": 3,
            "pools": [{"gpu": "H100", "on_demand": 320, "spot": 64}, {"gpu": "A100-80GB", "on_demand": 64}],
        },
        {
            "name": "us-west",
            "utc_offset_h": -8,
            "scale_out_lead_min": 10,
            "model_load_min": 3,
            "pools": [{"gpu": "H100", "on_demand": 224, "spot": 32}, {"gpu": "A100-80GB", "on_demand": 64}],
        },
        {
            "name": "eu-west",
            "utc_offset_h": 1,
            "scale_out_lead_min": 15,
            "model_load_min": 3,
            "pools": [{"gpu": "H100", "on_demand": 256, "spot": 32}, {"gpu": "A100-80GB", "on_demand": 64}],
        },
    ],
    "latency_ms": {"us-east": {"us-west": 65, "eu-west": 75}, "us-west": {"eu-west": 140}},
    "models": [
        {"name": "llama-3-8b", "load_min": 1},
        {"name": "codellama-34b", "load_min": 2},
        {"name": "qwen2.5-32b", "load_min": 2},
        {"name": "llama-2-70b", "load_min": 4},
    ],
    "tiers": {
        "iw": {"ttft_s": "auto", "tpot_s": "auto", "max_route_latency_ms": 100},
        "niw": {"deadline_h": 8, "fill_cap": NIW_FILL_CAP},
    },
    "objective": "cost",
}


def builtin_fleet() -> FleetSpec:
    return fleet_from_dict(BUILTIN_FLEET, "built-in fleet")

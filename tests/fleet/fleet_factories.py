"""Small fleets for the fleet tests: a hand-made capacity table, problems and YAML / CSV files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from oserve.fleet.capacity import CapacityTable, FleetConfig
from oserve.fleet.ilp import FleetProblem
from oserve.planner import Slo
from oserve.spec import ReplicaConfig, get_gpu

H100 = get_gpu("H100")


def make_table(shapes: list[tuple[int, int, float, float]]) -> CapacityTable:
    """``(model, tp, mu_iw_rps, mu_niw_rps)`` per config, all on H100."""
    configs = tuple(FleetConfig(m, ReplicaConfig(H100, tp=tp), iw, niw, "tpot") for m, tp, iw, niw in shapes)
    models = max(c.model for c in configs) + 1
    return CapacityTable(configs, tuple(Slo(1.0, 0.05) for _ in range(models)), (H100.name,))


def make_problem(
    table: CapacityTable,
    iw_rps: np.ndarray,  # regions x models x hours
    *,
    pools: list[int],
    niw: np.ndarray | None = None,  # models x hours, requests
    deadline_h: int = 4,
    load_min: float = 6.0,
    loss: np.ndarray | None = None,
    latency_ms: np.ndarray | None = None,
    max_route_ms: float = 100.0,
) -> FleetProblem:
    R, M, H = iw_rps.shape
    return FleetProblem(
        iw_rps=iw_rps,
        niw_arrivals=np.zeros((M, H)) if niw is None else niw,
        niw_backlog=np.zeros((M, H)),
        deadline_h=deadline_h,
        table=table,
        pools_od=np.array(pools, float)[:, None],
        pools_spot=np.zeros((R, 1)),
        price_od=np.full((R, 1), 2.0),
        price_spot=np.full((R, 1), 1.0),
        current=np.zeros((R, len(table.configs))),
        loss=np.zeros((R, M, H)) if loss is None else loss,
        load_h=np.full((R, M), load_min / 60.0),
        latency_ms=np.zeros((R, R)) if latency_ms is None else latency_ms,
        max_route_ms=max_route_ms,
        region_names=tuple(f"r{i}" for i in range(R)),
        model_names=tuple(f"m{i}" for i in range(M)),
    )


FLEET_YAML = """
regions:
  - name: east
    utc_offset_h: -5
    scale_out_lead_min: 10
    model_load_min: 2
    pools:
      - {gpu: H100, on_demand: 32, spot: 8}
  - name: west
    utc_offset_h: -8
    pools:
      - {gpu: H100, on_demand: 16}
latency_ms: {east: {west: 60}}
models:
  - {name: llama-3-8b, configs: ["H100:tp1", "H100:tp2"]}
tiers:
  iw: {max_route_latency_ms: 100}
  niw: {deadline_h: 4}
objective: gpu_hours
"""


def write_fleet(path: Path, text: str = FLEET_YAML) -> Path:
    path.write_text(text)
    return path


def write_workload(path: Path, *, hours: int = 48, peak_rps: float = 40.0, niw_share: float = 0.3) -> Path:
    """Hour-grain CSV: a diurnal IW curve per region and NIW at ``niw_share`` of it."""
    rows = ["time,region,model,tier,requests,mean_prompt_tokens,mean_output_tokens"]
    for h in range(hours):
        for region, scale in (("east", 1.0), ("west", 0.5)):
            rate = peak_rps * scale * (0.5 + 0.5 * np.sin(2 * np.pi * (h % 24) / 24) ** 2)
            rows.append(f"{h * 3600},{region},llama-3-8b,iw,{rate * 3600:.0f},1100,200")
            rows.append(f"{h * 3600},{region},llama-3-8b,niw,{rate * 3600 * niw_share:.0f},1100,200")
    path.write_text("\n".join(rows) + "\n")
    return path

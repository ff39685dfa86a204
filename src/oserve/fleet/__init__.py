"""Fleet layer (after SageServe, arXiv 2502.14617): capacity across regions, models and SLA tiers over hours.

load_fleet(path) / builtin_fleet()                       -> FleetSpec (regions, GPU pools, models, tiers)
load_workload_csv(path, fleet) / builtin_workload(fleet)  -> FleetWorkload (requests per minute, lengths)
build_capacity_table(fleet, workload.lengths)            -> CapacityTable (req/s per instance and tier)
FleetContext.build(fleet, workload); make_problem(...)   -> FleetProblem; solve_fleet -> FleetPlan; explain
make_policy(name, table, ctx); simulate_fleet(ctx, policy) -> FleetResult; check_region_hours(ctx, result)
"""

from oserve.fleet.capacity import CapacityTable, FleetConfig, build_capacity_table
from oserve.fleet.check import RegionHourCheck, check_region_hours
from oserve.fleet.explain import Shortfall, explain, hour_label
from oserve.fleet.forecast import FLEET_FORECASTERS, SeasonallyAdjusted, backtest_fleet, fleet_forecaster
from oserve.fleet.ilp import FleetPlan, FleetProblem, solve_fleet
from oserve.fleet.planning import FleetContext, fitted_forecaster, make_problem, plan_window
from oserve.fleet.policies import POLICIES, make_policy
from oserve.fleet.simulate import FleetResult, simulate_fleet
from oserve.fleet.spec import FleetSpec, builtin_fleet, fleet_from_dict, load_fleet
from oserve.fleet.workload import TIERS, FleetWorkload, builtin_workload, load_workload_csv

__all__ = [
    "FLEET_FORECASTERS",
    "POLICIES",
    "TIERS",
    "CapacityTable",
    "FleetConfig",
    "FleetContext",
    "FleetPlan",
    "FleetProblem",
    "FleetResult",
    "FleetSpec",
    "FleetWorkload",
    "RegionHourCheck",
    "SeasonallyAdjusted",
    "Shortfall",
    "backtest_fleet",
    "build_capacity_table",
    "builtin_fleet",
    "builtin_workload",
    "check_region_hours",
    "explain",
    "fitted_forecaster",
    "fleet_forecaster",
    "fleet_from_dict",
    "hour_label",
    "load_fleet",
    "load_workload_csv",
    "make_policy",
    "make_problem",
    "plan_window",
    "simulate_fleet",
    "solve_fleet",
]

"""Fleet spec validation: the built-in fleet, a YAML file, and bad input with one clear line naming the field."""

from __future__ import annotations

import pytest
import yaml
from fleet_factories import FLEET_YAML, write_fleet

from oserve.errors import ConfigError
from oserve.fleet import builtin_fleet, fleet_from_dict, load_fleet


def test_builtin_fleet_is_valid() -> None:
    fleet = builtin_fleet()
    assert fleet.region_names == ["us-east", "us-west", "eu-west"]
    assert len(fleet.models) == 4
    assert fleet.latency_ms[0][1] == fleet.latency_ms[1][0] == 65
    assert fleet.regions[0].pools[0].spot_price_per_hour < fleet.regions[0].pools[0].price_per_hour


def test_yaml_file_loads(tmp_path) -> None:
    fleet = load_fleet(write_fleet(tmp_path / "fleet.yaml"))
    assert fleet.region_names == ["east", "west"]
    assert [c.label for c in fleet.models[0].configs] == ["H100-SXM-80GB:tp1", "H100-SXM-80GB:tp2"]
    assert fleet.regions[1].scale_out_lead_min == 10  # default
    assert fleet.objective == "gpu_hours" and fleet.niw_deadline_h == 4
    assert fleet.niw_fill_cap == 0.9  # default
    data = _mutate(["tiers", "niw", "fill_cap"], 0.75)
    assert fleet_from_dict(data).niw_fill_cap == 0.75


def _mutate(path: list, value) -> dict:
    data = yaml.safe_load(FLEET_YAML)
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["regions", 0, "pools", 0, "on_demand"], -3, "regions[0].pools[0].on_demand"),
        (["regions", 0, "pools", 0, "gpu"], "B300", "unknown GPU type 'B300'"),
        (["regions", 1, "name"], "east", "duplicate region names"),
        (["regions", 0, "pools"], [{"gpu": "H100", "on_demand": 0}], "has no GPUs"),
        (["latency_ms"], {"east": {"mars": 5}}, "unknown region 'mars'"),
        (["models", 0, "configs"], ["H100:tp3"], "tp must be a power of two"),
        (["models", 0, "configs"], ["H100-tp2"], "expected GPU:tpN"),
        (["models", 0, "configs"], ["A100:tp2"], "which no region has"),
        (["models", 0, "name"], "gpt-17", "unknown model 'gpt-17'"),
        (["tiers", "niw", "deadline_h"], 0, "tiers.niw.deadline_h"),
        (["tiers", "niw", "fill_cap"], 1.5, "tiers.niw.fill_cap"),
        (["tiers", "iw", "ttft_s"], -1, "tiers.iw.ttft_s"),
        (["objective"], "speed", "objective"),
        (["regions", 0, "colour"], "blue", "regions[0].colour"),
    ],
)
def test_bad_spec_names_the_field(path, value, message) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")) as err:
        fleet_from_dict(_mutate(path, value), "fleet.yaml")
    assert str(err.value).startswith("fleet.yaml: ")
    assert "\n" not in str(err.value)


def test_unreadable_files(tmp_path) -> None:
    with pytest.raises(ConfigError, match="fleet spec not found"):
        load_fleet(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("regions: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_fleet(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_fleet(bad)

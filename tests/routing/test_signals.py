"""Routers declare the load signals they read; whoever drives one fills them or refuses it by name."""

from __future__ import annotations

import pytest
from tests.factories import make_replica

from oserve.errors import ConfigError
from oserve.routing import GATEWAY_SIGNALS, ROUTERS, Llumnix, Rebalancer, make_router
from oserve.routing.signals import SIGNALS
from oserve.runtime.gateway import Gateway
from oserve.spec import Deployment, Replica
from oserve.spec.router import RouterSpec


def _deployment(router: RouterSpec | None = None) -> Deployment:
    replicas = tuple(Replica(make_replica(tp=1), (i,), f"r{i}") for i in range(2))
    return Deployment("llama-3-8b", replicas, router=router)


ENDPOINTS = {"r0": "http://127.0.0.1:1", "r1": "http://127.0.0.1:2"}


@pytest.mark.parametrize("name", sorted(ROUTERS))
def test_every_router_declares_known_signals(name: str):
    router = make_router(name, [[1.0, 1.0]])
    assert router.signals <= set(SIGNALS), router.signals


def test_only_llumnix_rebalances():
    rebalancers = sorted(n for n in ROUTERS if isinstance(make_router(n, [[1.0, 1.0]]), Rebalancer))
    assert rebalancers == ["llumnix"]


def test_the_gateway_refuses_a_router_it_cannot_feed():
    with pytest.raises(ConfigError) as err:
        Gateway(_deployment(RouterSpec("llumnix")), ENDPOINTS)
    message = str(err.value)
    assert "\n" not in message
    assert "'llumnix' needs kv_blocks" in message and "the gateway does not collect" in message
    usable = message.split("use one of ")[1].split(", ")
    assert "allowed-least-load" in usable and "llumnix" not in usable
    assert all(ROUTERS[n].signals <= GATEWAY_SIGNALS for n in usable)


def test_the_gateway_takes_the_deployment_file_router_with_its_parameters():
    gw = Gateway(_deployment(RouterSpec("prefix-aware", {"load_span": 3.0, "prefix_weight": 2.0})), ENDPOINTS)
    router = gw.table.router
    assert (router.load_span, router.prefix_weight) == (3.0, 2.0)
    assert gw.table.uses_prefix


@pytest.mark.parametrize(
    ("parameters", "fragment"),
    [
        ({"interval": 1.0}, "has no parameter interval; it takes interval_s, threshold_blocks"),
        ({"interval_s": -1.0}, "interval_s must be > 0"),
        ({"interval_s": "soon"}, "parameters"),
    ],
)
def test_router_parameters_are_checked(parameters, fragment):
    with pytest.raises(ConfigError, match=fragment):
        make_router("llumnix", None, 0, parameters)


def test_parameters_reach_the_router():
    router = make_router("llumnix", None, 0, {"interval_s": 1.5, "threshold_blocks": 7})
    assert isinstance(router, Llumnix)
    assert (router.rebalance_interval_s, router.threshold_blocks) == (1.5, 7.0)
    with pytest.raises(ConfigError, match="round-robin' has no parameter x; it takes no parameters"):
        make_router("round-robin", None, 0, {"x": 1})

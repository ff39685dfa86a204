"""The gateway's route table balances mixed replica sizes as the simulator does (same router, same speeds)."""

from __future__ import annotations

from tests.factories import make_replica

from oserve.runtime.gateway.routes import ReplicaLoad, RouteTable
from oserve.spec import Deployment, Replica
from oserve.trace.classify import TypeGrid


def _table(router: str = "allowed-least-load") -> RouteTable:
    small, big = make_replica(tp=4), make_replica(tp=8)
    deployment = Deployment(
        "llama-2-70b", (Replica(small, (0, 1, 2, 3), "small"), Replica(big, tuple(range(8, 16)), "big"))
    )
    endpoints = {"small": "http://127.0.0.1:1", "big": "http://127.0.0.1:2"}
    loads: dict[str, ReplicaLoad] = {}
    return RouteTable(deployment, endpoints, TypeGrid(), router, loads, max_inflight=64)


def test_the_wider_replica_takes_twice_the_requests() -> None:
    table = _table()
    sent = {"small": 0, "big": 0}
    for _ in range(30):
        i = table.pick(0, 100.0, set())
        table.started(table.loads[i], 100.0)
        sent[table.names[i]] += 1
    assert sent == {"small": 10, "big": 20}


def test_least_tokens_ignores_speed() -> None:
    table = _table("least-tokens")
    for _ in range(30):
        i = table.pick(0, 100.0, set())
        table.started(table.loads[i], 100.0)
    assert [load.inflight for load in table.loads] == [15, 15]

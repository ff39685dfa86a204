"""``oserve.spec.replica``: ReplicaConfig validation and labels."""

from __future__ import annotations

import pytest

from factories import make_replica
from oserve.errors import SpecError


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"tp": 3}, "tp must be a power of two"),
        ({"tp": 6}, "tp must be a power of two"),
        ({"tp": 0}, "tp must be a power of two"),
        ({"tp": -2}, "tp must be a power of two"),
        ({"pp": 0}, "pp must be >= 1"),
        ({"pp": -1}, "pp must be >= 1"),
        ({"max_num_seqs": 0}, "must be positive"),
        ({"max_num_batched_tokens": 0}, "must be positive"),
        ({"block_size": 0}, "must be positive"),
        ({"max_model_len": 0}, "max_model_len must be positive"),
        ({"gpu_memory_utilization": 0.0}, "gpu_memory_utilization"),
        ({"gpu_memory_utilization": 1.01}, "gpu_memory_utilization"),
    ],
)
def test_invalid_replica_config(overrides: dict, expected: str) -> None:
    with pytest.raises(SpecError, match=expected):
        make_replica(**overrides)


@pytest.mark.parametrize(
    ("gpu", "tp", "pp", "num_gpus", "label"),
    [
        ("h100", 1, 1, 1, "H100-SXM-80GB:tp1"),
        ("h100", 4, 1, 4, "H100-SXM-80GB:tp4"),
        ("a100", 2, 2, 4, "A100-80GB:tp2pp2"),
        ("l40s", 1, 3, 3, "L40S:tp1pp3"),
    ],
)
def test_valid_replica_config(gpu: str, tp: int, pp: int, num_gpus: int, label: str) -> None:
    replica = make_replica(gpu, tp=tp, pp=pp)
    assert replica.num_gpus == num_gpus
    assert replica.label == label


def test_replica_is_frozen() -> None:
    replica = make_replica()
    with pytest.raises(AttributeError):
        replica.tp = 2  # type: ignore[misc]

"""The simulator sees what the gateway sees: requests typed and routed from prompt, ``max_tokens`` and the
learned output estimate by default; the true output lengths only with ``oracle_lengths``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from factories import make_model, make_replica
from oserve.cli.main import main
from oserve.routing import WeightedByType
from oserve.sim import simulate
from oserve.spec import Deployment, parse_cluster
from oserve.trace import OnlineClassifier, Trace, TypeGrid, load_trace, window
from oserve.trace.classify import DEFAULT_OUTPUT_ESTIMATE_TOKENS

CLUSTER = parse_cluster("1x8xH100")


class Recording(WeightedByType):
    """The weighted router, noting what it was shown for each request (in arrival order of first routes)."""

    def __init__(self, weights, seed: int = 0) -> None:
        super().__init__(weights, seed)
        self.seen: list[tuple] = []

    def route(self, type_index, tokens, load):
        self.seen.append(
            (
                type_index,
                float(tokens),
                load.outstanding_tokens.tolist(),
                load.queued.tolist(),
                load.running.tolist(),
            )
        )
        return super().route(type_index, tokens, load)


def _run(trace: Trace, grid: TypeGrid, **kwargs):
    routers: list[Recording] = []

    def factory(weights, seed):
        routers.append(Recording(weights, seed))
        return routers[-1]

    names = grid.names
    half = len(names) // 2
    dep = Deployment(
        "tiny",
        Deployment.homogeneous("tiny", CLUSTER, make_replica(), 4).replicas,
        {n: ({"r0": 1.0, "r1": 1.0} if k < half else {"r2": 1.0, "r3": 1.0}) for k, n in enumerate(names)},
    )
    res = simulate(trace, dep, make_model(), CLUSTER, router=factory, grid=grid, **kwargs)
    return res, routers[0].seen


@pytest.fixture(scope="module")
def conv(shared_traces) -> Trace:
    return window(load_trace(shared_traces / "azure_conv_2023.csv"), 0.0, 240.0)


def test_the_default_never_routes_on_a_request_s_own_output_length(conv) -> None:
    """Requests from index k on get other output lengths: what the router saw for request k (its type, tokens and
    the replicas' load) cannot change, as only earlier completions may inform it; with the oracle it does."""
    grid = TypeGrid.for_types(conv, 6)
    k = len(conv) // 2
    out = conv.output_tokens.copy()
    out[k:] = np.where(out[k:] > 100, 5, 700)  # long become short, short become long: types flip
    other = Trace.from_arrays(conv.arrival_s, conv.prompt_tokens, out, duration_s=conv.duration_s)
    a, seen_a = _run(conv, grid)
    b, seen_b = _run(other, grid)
    assert seen_a[: k + 1] == seen_b[: k + 1]
    assert a.records["type"].iloc[: k + 1].tolist() == b.records["type"].iloc[: k + 1].tolist()
    oa, oracle_a = _run(conv, grid, oracle_lengths=True)
    _, oracle_b = _run(other, grid, oracle_lengths=True)
    assert oracle_a[k] != oracle_b[k]
    assert oa.summary["oracle_lengths"] and not a.summary["oracle_lengths"]


def test_default_types_follow_the_online_classifier_and_differ_from_the_oracle(conv) -> None:
    grid = TypeGrid.for_types(conv, 6)
    online, seen = _run(conv, grid)
    oracle, seen_oracle = _run(conv, grid, oracle_lengths=True)
    true_types = grid.classify(conv)
    assert oracle.records["type"].tolist() == true_types.tolist()
    # the oracle router is told prompt + true output; the default, prompt + an estimate
    prompt, output = conv.prompt_tokens, conv.output_tokens
    assert [s[1] for s in seen_oracle[:50]] == (prompt + output)[:50].astype(float).tolist()
    # before any completion the estimate is the gateway's prior, so the first request's output bin is the prior's
    first = OnlineClassifier(grid).classify(int(prompt[0]), None)
    assert seen[0][:2] == (first[0], float(prompt[0] + DEFAULT_OUTPUT_ESTIMATE_TOKENS))
    online_types = online.records["type"].to_numpy()
    agree = float(np.mean(online_types == true_types))
    assert 0.3 < agree < 0.95  # prompt bins agree, output bins are a guess
    assert np.array_equal(grid.prompt_bin(prompt), online_types // grid.num_output_bins)
    # later estimates are learned medians of completed outputs: within the range of the outputs
    est = np.array([s[1] for s in seen]) - prompt
    late = est[len(est) // 2 :]
    assert np.all((late >= output.min()) & (late <= output.max()))
    assert online.summary["completed"] == oracle.summary["completed"]


def test_a_max_tokens_column_caps_the_estimate(conv) -> None:
    grid = TypeGrid.for_types(conv, 6)
    capped = Trace.from_arrays(
        conv.arrival_s,
        conv.prompt_tokens,
        conv.output_tokens,
        duration_s=conv.duration_s,
        extras={"max_tokens": np.full(len(conv), 8)},
    )
    _res, seen = _run(capped, grid)
    assert [s[1] for s in seen] == (conv.prompt_tokens + 8).astype(float).tolist()


def test_simulate_cli_marks_oracle_lengths(tmp_path, shared_traces, capsys) -> None:
    trace = window(load_trace(shared_traces / "azure_conv_2023.csv"), 0.0, 60.0)
    path = tmp_path / "t.csv"
    trace.to_csv(path)
    outputs = {}
    for flag in ((), ("--oracle-lengths",)):
        out = tmp_path / f"s{len(flag)}.json"
        argv = ["simulate", "--trace", str(path), "--model", "llama-3-8b", "--cluster", "1x2xH100"]
        rc = main([*argv, "--policy", "static", "--json", str(out), *flag])
        assert rc == 0
        outputs[bool(flag)] = (json.loads(out.read_text()), capsys.readouterr().out)
    for oracle, (data, text) in outputs.items():
        assert data["oracle_lengths"] is oracle
        assert data["policies"]["static"]["oracle_lengths"] is oracle
        assert ("oracle output lengths" in text) is oracle

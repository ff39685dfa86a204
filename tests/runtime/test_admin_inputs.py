"""The admin API's inputs over real loopback HTTP: size cap, strict validation (names never paths, integers
never rounded, finite numbers, well-formed type_edges), a 400 naming the field for every invalid body, and a
property test that random bodies never get a 5xx. ``oserve deploy`` gives the same errors on one line."""

from __future__ import annotations

import http.client
import json
import math
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving import ADMIN, ServerThread, serve_config

from oserve.cli.main import main
from oserve.runtime.admin import parse_deployment_body

ONE_GPU = {"cluster": "1x1xH100", "rates": "512:128=2"}
RUNNING = {"model": "llama-3-8b", "replicas": [{"name": "r0", "gpu": "H100", "tp": 1, "gpus": [0]}]}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    server = ServerThread(serve_config(tmp_path_factory.mktemp("admin"), **ONE_GPU))
    yield server
    server.close()


class Client:
    """One keep-alive HTTP/1.1 connection to the serve (the property test sends hundreds of bodies)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)

    def post(self, body: bytes, path: str = "/admin/deployment") -> tuple[int, dict]:
        try:
            self.conn.request("POST", path, body=body, headers={**ADMIN, "Content-Type": "application/json"})
            resp = self.conn.getresponse()
            raw = resp.read()
        except (http.client.HTTPException, OSError):
            self.conn.close()
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
            raise
        return resp.status, json.loads(raw, parse_constant=_no_constants)


def _no_constants(name: str) -> None:
    raise AssertionError(f"the server sent {name}, which is not JSON")


def _replica(**fields: object) -> bytes:
    return json.dumps({**RUNNING, "replicas": [{**RUNNING["replicas"][0], **fields}]}).encode()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (_replica(name="../../x"), "name"),
        (_replica(name="a/b"), "name"),
        (_replica(tp=1.9), "tp"),
        (_replica(tp="1"), "tp"),
        (_replica(gpus=[0.5]), "gpus[0]"),
        (_replica(gpus="0"), "gpus"),
        (b"model: llama-3-8b\nreplicas: [{gpu: H100, pp: .inf, gpus: [0]}]\n", "pp"),
        (json.dumps({**RUNNING, "type_edges": [1, 2]}).encode(), "type_edges"),
        (json.dumps({**RUNNING, "type_edges": {"prompt_edges": [200, 100]}}).encode(), "prompt_edges"),
        (
            b"model: llama-3-8b\nreplicas: [{gpu: H100, gpus: [0], name: r0}]\nweights: {t: {r0: .nan}}\n",
            "weights",
        ),
        (json.dumps({**RUNNING, "replicas": []}).encode(), "replica"),
        (b"[" * 5000 + b"]" * 5000, "nested"),
        (b"\xff\xfe", "UTF-8"),
        (b"replicas: [", "YAML"),
    ],
)
def test_an_invalid_body_is_a_400_naming_the_field(served: ServerThread, body: bytes, field: str):
    status, out = Client(served.url).post(body)
    assert status == 400 and field in out["error"]["message"], out
    assert served.server.orchestrator.current().replicas[0].name == "r0"  # nothing applied


def test_a_body_over_the_cap_is_a_413_without_reading_it_all(served: ServerThread):
    status, out = Client(served.url).post(b"#" * (served.server.config.gateway.max_admin_body_bytes + 1))
    assert status == 413 and "at most" in out["error"]["message"]


def test_the_running_deployment_posted_back_is_kept(served: ServerThread):
    status, out = Client(served.url).post(json.dumps(RUNNING).encode())
    assert status == 200 and out["kept"] == ["r0"] and not out["started"]


_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["H100", "r0", "../x", "llama-3-8b", ".inf", "1"])
)
_values = st.recursive(
    _scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip
_numbers = st.integers(-2, 9) | st.floats(allow_nan=True, allow_infinity=True) | _values
_replicas = st.fixed_dictionaries(
    {"gpu": st.sampled_from(["H100", "A100"]) | _values, "gpus": st.lists(_numbers, max_size=3) | _values},
    optional={"name": st.sampled_from(["r0", "w1", "../../x", ""]) | _values, "tp": _numbers, "pp": _numbers},
)
_deployments = st.fixed_dictionaries(
    {"replicas": st.lists(_replicas, max_size=3)},
    optional={
        "model": st.sampled_from(["llama-3-8b", "llama-2-70b"]) | _values,
        "weights": st.dictionaries(st.text(max_size=6), st.dictionaries(st.text(max_size=4), _numbers))
        | _values,
        "type_edges": st.fixed_dictionaries({}, optional={"prompt_edges": st.lists(_numbers, max_size=3)})
        | _values,
    },
)


def _encode(value: object, as_yaml: bool) -> bytes:
    if as_yaml:
        try:
            return yaml.safe_dump(value).encode()
        except yaml.YAMLError:
            return b"{"
    return json.dumps(value).encode()  # NaN and Infinity as JavaScript spells them


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.binary(max_size=300)
    | st.builds(_encode, _values, st.booleans())
    | st.builds(_encode, _deployments, st.booleans())
)
def test_random_bodies_never_get_a_5xx(served: ServerThread, body: bytes):
    status, out = Client(served.url).post(body)
    assert status < 500, (body, out)
    if status != 200:
        assert out["error"]["message"]


@given(body=st.builds(_encode, _deployments, st.booleans()) | st.binary(max_size=200))
@settings(max_examples=300, deadline=None)
def test_the_body_parser_raises_only_spec_errors(body: bytes):
    from oserve.errors import SpecError

    try:
        deployment = parse_deployment_body(body)
    except SpecError:
        return
    for replica in deployment.replicas:
        assert "/" not in replica.name and replica.config.tp >= 1
    for row in deployment.weights.values():
        assert all(math.isfinite(w) for w in row.values())


def test_deploy_of_a_bad_file_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    for text, field in [
        ("model: m\nreplicas: [{gpu: H100, pp: .inf, gpus: [0]}]\n", "pp"),
        ("model: m\nreplicas: [{gpu: H100, gpus: [0]}]\ntype_edges: [1, 2]\n", "type_edges"),
        ("[" * 5000, "nested"),
    ]:
        file = tmp_path / "d.yaml"
        file.write_text(text)
        assert main(["deploy", str(file), "--gateway", "http://127.0.0.1:9"]) == 1
        err = capsys.readouterr().err
        assert field in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err

"""Real traffic through `oserve plan` and `oserve simulate`: a long-context blend (Mooncake + the Azure conv hour)
plans and simulates with the default SLO, requests beyond the context are rejected and counted, per-class SLOs
are scored per class, best-effort types are reported rather than refused, and the user's type edges are honoured."""

from __future__ import annotations

import json

import numpy as np
import pytest

from oserve.cli.main import main
from oserve.spec import Deployment
from oserve.trace import blend, load_trace, window


@pytest.fixture(scope="module")
def long_blend(shared_traces, tmp_path_factory):
    """40 s of the Mooncake synthetic trace over 40 s of the conv hour, as a plain CSV."""
    conv = window(load_trace(shared_traces / "azure_conv_2023.csv"), 0, 40)
    moon = window(load_trace(shared_traces / "mooncake_synthetic.jsonl"), 0, 40)
    trace = blend([conv, moon])
    path = tmp_path_factory.mktemp("blend") / "blend.csv"
    trace.to_csv(path)
    return path, load_trace(path)  # as the commands read it


def _plan(tmp_path, trace_path, *extra, model="llama-3.1-8b", cluster="1x8xH100"):
    out, dep = tmp_path / "plan.json", tmp_path / "dep.yaml"
    rc = main(
        [
            "plan",
            "-m",
            model,
            "-c",
            cluster,
            "-t",
            str(trace_path),
            "--json",
            str(out),
            "-o",
            str(dep),
            *extra,
        ]
    )
    assert rc == 0
    return json.loads(out.read_text()), dep


def test_a_long_context_blend_plans_and_simulates_with_the_default_slo(long_blend, tmp_path, capsys):
    path, trace = long_blend
    assert np.mean(trace.prompt_tokens >= 16384) > 0.05  # the blend does carry long-context requests
    data, dep = _plan(tmp_path, path)
    assert data["alpha"] > 0 and data["best_effort"] == [] and data["rejected_requests"] == 0
    # the long prompts have a bucket of their own, not lumped by quantiles with the conv hour's prompts
    long_types = [t for t in data["types"] if t["name"].startswith("p>=16384")]
    assert long_types and all(t["prompt_tokens"] >= 16384 for t in long_types)
    assert sum(t["rate_rps"] for t in long_types) == pytest.approx(
        np.sum(trace.prompt_tokens >= 16384) / trace.duration_s
    )
    summary = tmp_path / "sim.json"
    rc = main(["simulate", "-m", "llama-3.1-8b", "-c", "1x8xH100", "-t", str(path), "-d", str(dep),
               "--json", str(summary)])  # fmt: skip
    assert rc == 0
    s = json.loads(summary.read_text())["policies"]["static"]
    assert s["requests"] == len(trace) and s["completed"] + s["rejected"] + s["dropped"] == len(trace)
    assert 0 < s["slo_attainment"] <= 1 and s["slo_attainment_by_type"]


def test_requests_beyond_the_context_are_rejected_and_counted(long_blend, tmp_path, capsys):
    path, trace = long_blend
    over = int(
        np.sum(trace.prompt_tokens + np.maximum(trace.output_tokens, 1) > 4096)
    )  # Llama-2's 4k context
    assert over > 0
    data, dep = _plan(tmp_path, path, model="llama-2-70b", cluster="2x8xH100")
    assert data["rejected_requests"] == over and data["alpha"] > 0
    assert any(name.startswith("p>=16384") for name in data["unheld_types"])
    assert "vLLM rejects them" in capsys.readouterr().out
    summary = tmp_path / "sim.json"
    rc = main(["simulate", "-m", "llama-2-70b", "-c", "2x8xH100", "-t", str(path), "-d", str(dep),
               "--json", str(summary)])  # fmt: skip
    assert rc == 0
    s = json.loads(summary.read_text())["policies"]["static"]
    assert s["rejected"] == over and s["unholdable"] == over
    assert s["slo_attainment"] <= 1 - over / len(trace) + 1e-9  # rejected requests count against attainment


def test_attainment_is_reported_per_class(long_blend, tmp_path):
    path, trace = long_blend
    slo = "ttft=2,tpot=0.1;batch:prompt>=16000:e2e=300"
    data, dep = _plan(tmp_path, path, "--slo", slo)
    assert [c["name"] for c in data["slo_classes"]["classes"]] == ["batch"]
    assert 16000 in data["type_edges"]["prompt_edges"]  # the rule's cut is a type edge: no type mixes classes
    batch_types = [t for t, v in data["type_slos"].items() if v == {"e2e_s": 300.0}]
    assert batch_types and all(t.startswith("p>=16000") for t in batch_types)
    summary = tmp_path / "sim.json"
    rc = main(["simulate", "-m", "llama-3.1-8b", "-c", "1x8xH100", "-t", str(path), "-d", str(dep),
               "--slo", slo, "--json", str(summary)])  # fmt: skip
    assert rc == 0
    s = json.loads(summary.read_text())["policies"]["static"]
    assert s["requests_by_class"] == {
        "batch": int(np.sum(trace.prompt_tokens >= 16000)),
        "default": int(np.sum(trace.prompt_tokens < 16000)),
    }
    by = s["slo_attainment_by_class"]
    sizes = s["requests_by_class"]
    overall = sum(by[c] * sizes[c] for c in by) / sum(sizes.values())
    assert s["slo_attainment"] == pytest.approx(overall)


def test_a_type_nothing_serves_within_target_is_planned_best_effort_and_reported(tmp_path, capsys):
    out = tmp_path / "plan.json"
    rc = main(["plan", "-m", "llama-3-8b", "-c", "1x8xH100", "--rates", "300:100=4,6000:100=1",
               "--slo", "ttft=2,tpot=0.1;rush:prompt>=3000:ttft=0.01,tpot=0.1", "--json", str(out)])  # fmt: skip
    assert rc == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "best-effort:" in text
    data = json.loads(out.read_text())
    (effort,) = data["best_effort"]
    long_type = next(t["name"] for t in data["types"] if t["prompt_tokens"] == 6000)
    assert effort["type"] == long_type and effort["relax"] > 1 and "TTFT" in effort["reason"]
    served = {t for r in data["replicas"] for t in r["weights"]}
    assert long_type in served and len(served) == 2  # both types routed; the short one as usual


def test_type_edges_are_honoured(long_blend, tmp_path):
    path, _ = long_blend
    data, dep = _plan(tmp_path, path, "--prompt-edges", "1024,8192,32768", "--output-edges", "128,512")
    assert data["type_edges"]["prompt_edges"] == [1024, 8192, 32768]
    assert data["type_edges"]["output_edges"] == [128, 512]
    edges = Deployment.load(dep).type_edges
    assert edges.prompt_edges == (1024, 8192, 32768) and edges.output_edges == (128, 512)
    assert {t["name"].split(",o")[0] for t in data["types"]} <= {
        "p<1024",
        "p[1024,8192)",
        "p[8192,32768)",
        "p>=32768",
    }


@pytest.mark.parametrize("edges", ["8192,1024", "0,5", "a,b"])
def test_bad_edges_are_refused(long_blend, edges, capsys):
    path, _ = long_blend
    rc = main(["plan", "-m", "llama-3-8b", "-c", "1x8xH100", "-t", str(path), "--prompt-edges", edges])
    assert rc == 2
    assert "--prompt-edges" in capsys.readouterr().err

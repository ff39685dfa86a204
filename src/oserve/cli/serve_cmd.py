"""``oserve serve``: the live endpoint (engines, gateway, controller); ``oserve deploy``: switch a running serve to a
deployment file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from oserve.cli.console import make_console
from oserve.errors import ConfigError, OServeError

console = make_console(stderr=True)
SERVE_EXTRA_HINT = "needs the serve extra: pip install 'oserve[serve]'"


def serve(
    deployment: Path | None = typer.Option(None, "--deployment", "-d", help="Deployment file to run."),
    model: str | None = typer.Option(None, "--model", "-m", help="Model (default llama-3-8b)."),
    cluster: str | None = typer.Option(
        None, "--cluster", "-c", help="Cluster: 1x4xH100 (default), ... or YAML."
    ),
    rates: str | None = typer.Option(
        None,
        "--rates",
        help="Without --deployment, plan for PROMPT:OUTPUT=RPS,... (default 512:128=4,2048:512=1).",
    ),
    slo: str | None = typer.Option(
        None,
        "--slo",
        help="Targets as `oserve plan --slo` takes them, per class too (default auto); requests name their "
        "class by the x-oserve-class header or metadata.oserve_class.",
    ),
    prompt_edges: str | None = typer.Option(
        None,
        "--prompt-edges",
        help="Type edges over prompt tokens (comma-separated) for the plan and gateway.",
    ),
    output_edges: str | None = typer.Option(
        None,
        "--output-edges",
        help="Type edges over output tokens (comma-separated) for the plan and gateway.",
    ),
    backend: str | None = typer.Option(None, "--backend", help="emulated (default) | vllm."),
    orchestrator: str | None = typer.Option(None, "--orchestrator", help="local (default) | ray."),
    host: str | None = typer.Option(None, "--host", help="Gateway address (default 127.0.0.1)."),
    port: int | None = typer.Option(
        None, "--port", "-p", help="Gateway port (default 8000; 0: any free port)."
    ),
    speed: float | None = typer.Option(
        None, "--speed", help="Emulated engines run this many times real time."
    ),
    api_key: str | None = typer.Option(
        None, "--api-key", envvar="OSERVE_API_KEY", help="Key /v1/* requires as 'Authorization: Bearer'."
    ),
    admin_token: str | None = typer.Option(
        None, "--admin-token", envvar="OSERVE_ADMIN_TOKEN", help="Token /admin/* and `oserve deploy` need."
    ),
    insecure_admin: bool = typer.Option(
        False, "--insecure-admin", help="Serve /admin/* without a token (trusted loopback only)."
    ),
    no_controller: bool = typer.Option(False, "--no-controller", help="Keep the deployment; no re-planning."),
    config: Path | None = typer.Option(None, "--config", help="Serve config file (YAML; see docs/serve.md)."),
) -> None:
    """Serve a model: engines per the deployment, an OpenAI-compatible gateway in front, a controller that
    re-plans as load shifts. Defaults: emulated engines on loopback, llama-3-8b on 1x4xH100. SIGTERM or Ctrl-C
    finishes the requests in flight, then stops."""
    try:
        from oserve.runtime import run_async
        from oserve.runtime.config import load_serve_config
        from oserve.runtime.loop import tune_gc
        from oserve.runtime.serve import Server
    except ImportError as exc:
        raise ConfigError(f"oserve serve {SERVE_EXTRA_HINT} ({exc.name} is missing)") from exc
    if deployment is not None and (model is not None or rates is not None):
        raise typer.BadParameter("give --deployment or --model/--rates, not both", param_hint="--deployment")
    from oserve.cli.options import parse_edges

    p_edges, o_edges = (
        parse_edges(prompt_edges, "--prompt-edges"),
        parse_edges(output_edges, "--output-edges"),
    )
    settings = load_serve_config(config).merged(
        {
            "deployment": str(deployment) if deployment else None,
            "model": model,
            "cluster": cluster,
            "rates": rates,
            "slo": slo,
            "prompt_edges": list(p_edges) if p_edges is not None else None,
            "output_edges": list(o_edges) if o_edges is not None else None,
            "backend.name": backend,
            "backend.speed": speed,
            "orchestrator.name": orchestrator,
            "gateway.host": host,
            "gateway.port": port,
            "gateway.api_key": api_key or None,
            "gateway.admin_token": admin_token or None,
            "gateway.insecure_admin": True if insecure_admin else None,
            "controller.enabled": False if no_controller else None,
        }
    )
    console.print(
        f"starting {settings.backend.name} engines ({settings.orchestrator.name})...", highlight=False
    )
    server = Server(settings)
    for warning in server.exposure_warnings():
        console.print(f"warning: {warning}", highlight=False)

    def ready(report) -> None:
        console.print(
            f"serving {server.model.name} on {server.cluster.name}: {report.deployment.describe()} "
            f"({server.planned_note}; engines up in {report.converge_s:.1f} s)",
            highlight=False,
        )
        g = server.config.gateway
        admin = "token required" if g.admin_token else ("no token" if g.insecure_admin else "off")
        key = "key required" if g.api_key else "no key"
        console.print(
            f"OpenAI API at {server.url}/v1 ({key}); admin {server.url}/admin/status ({admin})",
            highlight=False,
        )
        tune_gc(g.gc_gen0_threshold)  # serving now: start-up's objects out of the collector's way

    run_async(server.run_until_signal(ready=ready))
    console.print("stopped", highlight=False)


def _admin_post(gateway: str, path: str, body: bytes, token: str | None, timeout_s: float, what: str) -> dict:
    """POST to the serve's admin API; its JSON answer, or an ``OServeError`` with the serve's message."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        f"{gateway.rstrip('/')}{path}",
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            **({"Authorization": f"Bearer {token}"} if token else {}),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = exc.reason
        raise OServeError(f"{gateway} refused {what} (HTTP {exc.code}): {message}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise OServeError(f"cannot reach {gateway}: {getattr(exc, 'reason', exc)}") from exc


def deploy(
    file: Path | None = typer.Argument(
        None, help="Deployment file (YAML or JSON) to switch to; leave out with --release."
    ),
    release: bool = typer.Option(
        False, "--release", help="Release the pin of the last manual deploy: the controller may switch again."
    ),
    gateway: str = typer.Option("http://127.0.0.1:8000", "--gateway", "-g", help="URL of the running serve."),
    token: str | None = typer.Option(
        None, "--admin-token", "--token", envvar="OSERVE_ADMIN_TOKEN", help="The serve's admin token."
    ),
    timeout_s: float = typer.Option(3600.0, "--timeout", help="Seconds to wait for the switch to converge."),
    json_out: bool = typer.Option(False, "--json", help="Print the apply report as JSON."),
) -> None:
    """Apply a deployment to a running `oserve serve`: start, re-route, drain and stop replicas without losing a
    request; prints what was kept, started and stopped and the time to converge. The deployment stays pinned
    (the controller does not switch away from it) until `oserve deploy --release`."""
    from oserve.spec import Deployment

    if release:
        if file is not None:
            raise ConfigError("give a deployment file or --release, not both")
        answer = _admin_post(gateway, "/admin/deployment/release", b"{}", token, timeout_s, "the release")
        if json_out:
            sys.stdout.write(json.dumps(answer, indent=2) + "\n")
            return
        state = "released: the controller may switch again" if answer["released"] else "nothing was pinned"
        make_console().print(state, highlight=False)
        return
    if file is None:
        raise ConfigError("give a deployment file to deploy (or --release)")
    body = json.dumps(Deployment.load(file).to_dict()).encode()  # validate here: a bad file never leaves
    report = _admin_post(gateway, "/admin/deployment", body, token, timeout_s, "the deployment")
    if json_out:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return
    out = make_console()
    out.print(
        f"converged in {report['converge_s']:.2f} s: kept {', '.join(report['kept']) or '-'}; started "
        f"{', '.join(report['started']) or '-'}; stopped {', '.join(report['stopped']) or '-'}",
        highlight=False,
    )
    for step in report["steps"]:
        out.print(
            f"  {step['start_s']:7.2f}-{step['end_s']:7.2f} s  {step['action']:<6} {', '.join(step['replicas'])}",
            highlight=False,
        )
    for note in report["notes"]:
        out.print(f"  note: {note}", highlight=False)
    if report.get("pinned"):
        out.print(
            "pinned: the controller holds this deployment until `oserve deploy --release`", highlight=False
        )

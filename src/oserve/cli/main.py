"""Entry point: ``oserve`` and its sub-commands. Each command group lives in its own module."""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from oserve import __version__
from oserve.cli import (
    demo_cmd,
    engine_cmd,
    fleet_cmd,
    forecast_cmd,
    perf_cmd,
    plan_cmd,
    profile_cmd,
    serve_cmd,
    simulate_cmd,
    spec_cmd,
    trace_cmd,
)
from oserve.cli.console import make_console
from oserve.errors import OServeError

app = typer.Typer(
    name="oserve",
    help="OServe: plan, simulate and serve heterogeneous LLM deployments matched to the workload.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = make_console(stderr=True)
_state = {"debug": False}


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"oserve {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    _state["debug"] = debug


app.command("demo", help=demo_cmd.demo.__doc__)(demo_cmd.demo)
app.add_typer(spec_cmd.app, name="spec")
app.add_typer(trace_cmd.app, name="trace")
app.add_typer(perf_cmd.app, name="perf")
app.command("profile", help=profile_cmd.profile.__doc__)(profile_cmd.profile)
app.command("simulate", help=simulate_cmd.simulate_cmd.__doc__, epilog=simulate_cmd.policies_epilog())(
    simulate_cmd.simulate_cmd
)
app.command("plan", help=plan_cmd.plan_cmd.__doc__)(plan_cmd.plan_cmd)
app.command("forecast", help=forecast_cmd.forecast_cmd.__doc__)(forecast_cmd.forecast_cmd)
app.command("engine", help=engine_cmd.engine.__doc__)(engine_cmd.engine)
app.command("serve", help=serve_cmd.serve.__doc__)(serve_cmd.serve)
app.command("deploy", help=serve_cmd.deploy.__doc__)(serve_cmd.deploy)
app.add_typer(fleet_cmd.app, name="fleet")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI: usage errors exit 2 (click's message), OServe errors print one line and exit 1
    (``--debug`` re-raises them with the traceback)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in args:  # accepted anywhere on the line, not only before the command
        args = ["--debug", *(a for a in args if a != "--debug")]
    try:
        app(args=args, prog_name="oserve", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except OServeError as exc:
        if "--debug" in args:
            raise
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

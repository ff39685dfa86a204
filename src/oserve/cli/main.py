"""Entry point: ``oserve`` and its sub-commands. Each command group lives in its own module."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from oserve import __version__
from oserve.cli import demo_cmd, perf_cmd, profile_cmd, spec_cmd, trace_cmd
from oserve.errors import OServeError

app = typer.Typer(
    name="oserve",
    help="OServe: plan, simulate and serve heterogeneous LLM deployments matched to the workload.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True)
_state = {"debug": False}


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    _state["debug"] = debug
    if version:
        typer.echo(f"oserve {__version__}")
        raise typer.Exit()


app.command("demo", help=demo_cmd.demo.__doc__)(demo_cmd.demo)
app.add_typer(spec_cmd.app, name="spec")
app.add_typer(trace_cmd.app, name="trace")
app.add_typer(perf_cmd.app, name="perf")
app.command("profile", help=profile_cmd.profile.__doc__)(profile_cmd.profile)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; OServe errors print one clear line and exit 1 (``--debug`` re-raises)."""
    args = sys.argv[1:] if argv is None else argv
    try:
        app(args=args, standalone_mode=False)
    except OServeError as exc:
        if "--debug" in args:
            raise
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 1
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        err.print("aborted")
        return 130
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            return exc.exit_code
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())

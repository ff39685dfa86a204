"""Placeholder: replaced by the real command group in this session."""

import typer

app = typer.Typer(no_args_is_help=True)

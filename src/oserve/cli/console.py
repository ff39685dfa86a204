"""Consoles for the CLI: full-width tables when output goes to a file or a pipe, not 80 columns."""

from __future__ import annotations

from rich.console import Console

PIPE_WIDTH = 160


def make_console(*, stderr: bool = False) -> Console:
    console = Console(stderr=stderr)
    return console if console.is_terminal else Console(stderr=stderr, width=PIPE_WIDTH)

"""The ``oserve`` command line (typer + rich). Nothing imports this package."""

"""Placeholder: replaced by the real command in this session."""


def demo() -> None:
    """Run the built-in end-to-end job."""

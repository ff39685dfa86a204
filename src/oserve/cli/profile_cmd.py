"""Placeholder: replaced by the real command in this session."""


def profile() -> None:
    """Measure per-op timings with PyTorch on the local device."""

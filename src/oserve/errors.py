"""OServe's one exception tree.

    OServeError
     ├── ConfigError        a config file or option is invalid
     │    └── SpecError     unknown or malformed model / GPU / cluster spec
     ├── TraceError         a trace file cannot be read (names file and line)
     ├── CalibrationError   a calibration or measurement file is unusable
     ├── InfeasibleError    no plan satisfies the constraints (an expected outcome at the API
     │                      boundary; inside, planners return results instead)
     ├── BackendError       an engine backend failed
     └── GatewayError       an HTTP-facing error, with status and OpenAI error type

Third-party errors are translated at the boundary with ``raise ... from exc``.
The CLI prints the message and exits non-zero; ``--debug`` shows the traceback.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "CalibrationError",
    "ConfigError",
    "GatewayError",
    "InfeasibleError",
    "OServeError",
    "SpecError",
    "TraceError",
]


class OServeError(Exception):
    """Base of every error OServe raises on purpose."""


class ConfigError(OServeError):
    """A configuration value or file is invalid."""


class SpecError(ConfigError):
    """An unknown or malformed model, GPU or cluster spec."""


class TraceError(OServeError):
    """A trace cannot be loaded; the message names the file and, where known, the line."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)
        self.path = path
        self.line = line


class CalibrationError(OServeError):
    """Measurement points or a calibration file are unusable."""


class InfeasibleError(OServeError):
    """No deployment or plan satisfies the constraints."""


class BackendError(OServeError):
    """An engine backend (vLLM, emulated) failed."""


class GatewayError(OServeError):
    """An error surfaced over HTTP, with its status code and OpenAI error type."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        error_type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.param = param  # the offending request field, as OpenAI's error body names it
        self.code = code

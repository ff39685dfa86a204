"""``RouterSpec``: the router a deployment is served under, as llm-d configures its plug-ins (``{type, parameters}``)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from oserve.errors import SpecError

__all__ = ["DEFAULT_ROUTER", "RouterSpec"]

#: the router used wherever neither the user nor the deployment names one (the gateway's, and the first the
#: planner's simulation check tries)
DEFAULT_ROUTER = "allowed-least-load"
_TYPE = re.compile(r"[a-z][a-z0-9-]{0,63}")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_MAX_PARAMETERS = 32


@dataclass(frozen=True, slots=True)
class RouterSpec:
    """A registered router name (``routing.ROUTERS``) and its scalar parameters (e.g. ``interval_s``)."""

    type: str = DEFAULT_ROUTER
    parameters: dict[str, int | float | str | bool] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "parameters": dict(self.parameters)}

    @classmethod
    def from_dict(cls, data: Any, where: str = "router") -> RouterSpec:
        """Strict: ``type`` a lower-case name, ``parameters`` a mapping of identifiers to finite scalars. A bare
        string is the type with no parameters."""
        if isinstance(data, str):
            data = {"type": data}
        if not isinstance(data, dict):
            raise SpecError(f"{where} must be a mapping {{type, parameters}}, got {type(data).__name__}")
        unknown = sorted(str(k) for k in data if k not in ("type", "parameters"))
        if unknown:
            raise SpecError(f"{where}: unknown keys {unknown}; expected type, parameters")
        kind = data.get("type", DEFAULT_ROUTER)
        if not isinstance(kind, str) or not _TYPE.fullmatch(kind):
            raise SpecError(
                f"{where}.type must be a router name such as {DEFAULT_ROUTER!r}, got {kind!r:.70}"
            )
        params = data.get("parameters") or {}
        if not isinstance(params, dict) or len(params) > _MAX_PARAMETERS:
            raise SpecError(f"{where}.parameters must be a mapping of at most {_MAX_PARAMETERS} entries")
        out: dict[str, int | float | str | bool] = {}
        for key, value in params.items():
            if not isinstance(key, str) or not _KEY.fullmatch(key):
                raise SpecError(f"{where}.parameters: {key!r:.70} is not an identifier")
            at = f"{where}.parameters.{key}"
            if isinstance(value, float) and not math.isfinite(value):
                raise SpecError(f"{at} must be finite, got {value}")
            if isinstance(value, str) and len(value) > 256:
                raise SpecError(f"{at} is longer than 256 characters")
            if not isinstance(value, bool | int | float | str):
                raise SpecError(f"{at} must be a number, string or boolean, got {type(value).__name__}")
            out[key] = value
        return cls(kind, out)

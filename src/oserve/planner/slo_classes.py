"""SLO classes: targets per class of traffic (interactive, batch, ...) and which class each request is in.

Spelling (``parse_slo_classes``; classes apart by ``;``)::

    ttft=2,tpot=0.1;interactive:ttft=1,tpot=0.05;batch:prompt>=16000:e2e=600

- a part without ``NAME:`` is the default class (``default:`` names it too); its keys left out take the ``auto``
  default, as a single-class ``--slo`` always did;
- a named class sets only the targets it names: a metric it leaves out has no target (``batch:e2e=600`` is
  scored on E2E alone); ``NAME:auto`` takes the whole ``auto`` default;
- ``NAME:prompt>=N:TARGETS`` also puts requests of at least ``N`` prompt tokens in the class when nothing names
  their class (the first rule that matches, in the order given).

A request's class is, in order: the one it names (a trace's ``slo_class`` or ``class`` column; live, the
``x-oserve-class`` header or the body's ``metadata.oserve_class``), when it is a class of the policy; else the
first prompt rule it matches; else the default class. A named class that is not defined falls to the default
class and is counted (``assign`` reports how many).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from oserve.errors import ConfigError
from oserve.planner.slo import Slo, parse_slo_targets
from oserve.trace import Trace

__all__ = [
    "CLASS_COLUMNS",
    "DEFAULT_CLASS",
    "SloClass",
    "SloClasses",
    "parse_slo_classes",
    "type_slos",
]

DEFAULT_CLASS = "default"
#: trace columns naming each request's class, first found wins
CLASS_COLUMNS = ("slo_class", "class")
_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,31}$")
_RULE = re.compile(r"^prompt\s*>=\s*(\S+)$")
_SYNTAX = "[NAME[:prompt>=N]:]ttft=S[+S/tok],tpot=S,e2e=S; ... (default class first, no NAME)"


@dataclass(frozen=True, slots=True)
class SloClass:
    """One named class: its targets, and the prompt length (tokens, inclusive) from which requests no one named
    fall in it (None: only requests that name it)."""

    name: str
    slo: Slo
    prompt_min_tokens: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "slo": self.slo.to_dict()}
        if self.prompt_min_tokens is not None:
            out["prompt_min_tokens"] = self.prompt_min_tokens
        return out


@dataclass(frozen=True, slots=True)
class SloClasses:
    """The default class's targets and the named classes (none: the single-class SLO of old)."""

    default: Slo
    named: tuple[SloClass, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return (DEFAULT_CLASS, *(c.name for c in self.named))

    @property
    def single(self) -> bool:
        return not self.named

    def slo_of(self, name: str) -> Slo:
        for c in self.named:
            if c.name == name:
                return c.slo
        return self.default

    def targets(self) -> dict[str, dict[str, float]]:
        """Each class's simulator ``slo`` mapping, the default class's included."""
        return {n: self.slo_of(n).to_dict() for n in self.names}

    @property
    def prompt_thresholds(self) -> tuple[int, ...]:
        """The prompt lengths the rules cut at (the type grid cuts there too, so a type holds one such class)."""
        return tuple(sorted({c.prompt_min_tokens for c in self.named if c.prompt_min_tokens is not None}))

    def assign_one(self, prompt_tokens: int, named: str | None = None) -> str:
        """The class of one request (live traffic): the one it names when defined, else the first prompt rule
        it matches, else the default."""
        if named:
            key = named.strip().lower()
            if key in self.names:
                return key
        for c in self.named:
            if c.prompt_min_tokens is not None and prompt_tokens >= c.prompt_min_tokens:
                return c.name
        return DEFAULT_CLASS

    def assign(self, trace: Trace) -> tuple[np.ndarray, int]:
        """(class name per request as an object array, requests naming a class not defined here)."""
        out = np.full(len(trace), DEFAULT_CLASS, dtype=object)
        taken = np.zeros(len(trace), bool)
        unknown = 0
        column = next((trace.extras[c] for c in CLASS_COLUMNS if c in trace.extras), None)
        if column is not None:
            given = np.array([str(v).strip().lower() if v is not None else "" for v in column], dtype=object)
            blank = np.isin(given, ["", "nan", "none"])
            known = np.isin(given, list(self.names))
            unknown = int(np.count_nonzero(~known & ~blank))
            out[known] = given[known]
            taken = known
        for c in self.named:
            if c.prompt_min_tokens is not None:
                hit = ~taken & (trace.prompt_tokens >= c.prompt_min_tokens)
                out[hit] = c.name
                taken = taken | hit
        return out, unknown

    def strictest(self, names: Sequence[str]) -> Slo:
        """Each metric's tightest target over these classes (how a type mixing them is planned)."""
        slos = [self.slo_of(n) for n in dict.fromkeys(names)] or [self.default]
        out = slos[0]
        for s in slos[1:]:
            out = out.tightest(s)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"default": self.default.to_dict(), "classes": [c.to_dict() for c in self.named]}

    def describe(self) -> str:
        if self.single:
            return self.default.describe()
        rest = "; ".join(
            f"{c.name}"
            + (f" (prompt >= {c.prompt_min_tokens:,})" if c.prompt_min_tokens is not None else "")
            + f": {c.slo.describe()}"
            for c in self.named
        )
        return f"default: {self.default.describe()}; {rest}"


def _rule(name: str, text: str) -> int:
    match = _RULE.match(text.strip().lower())
    if not match:
        raise ConfigError(
            f"SLO class {name!r}: rule {text.strip()!r} is not prompt>=TOKENS (e.g. prompt>=16000)"
        )
    try:
        value = float(match.group(1))
    except ValueError:
        raise ConfigError(
            f"SLO class {name!r}: prompt>={match.group(1)!r} is not a number of tokens"
        ) from None
    if not (math.isfinite(value) and value >= 1 and value == int(value)):
        raise ConfigError(
            f"SLO class {name!r}: prompt>={match.group(1)} must be a whole number of tokens >= 1"
        )
    return int(value)


def parse_slo_classes(text: str, auto: Slo) -> SloClasses:
    """``--slo`` as classes (module docstring), ``auto`` the default-class targets the spelling fills in.
    Raises ``ConfigError`` naming the bad part, never anything else."""
    if not isinstance(text, str):
        raise ConfigError(f"SLO must be text, got {type(text).__name__}")
    parts = [p.strip() for p in text.split(";")]
    if len(parts) > 1 and not all(parts):
        raise ConfigError(f"SLO {text!r}: empty class between semicolons; expected {_SYNTAX}")
    default: Slo | None = None
    named: list[SloClass] = []
    for part in parts:
        pieces = [p.strip() for p in part.split(":")]
        if len(pieces) == 1 or (len(pieces) == 2 and pieces[0].lower() == DEFAULT_CLASS):
            if default is not None:
                raise ConfigError("SLO: the default class (no NAME:) is given twice")
            default = _default_slo(pieces[-1], auto)
            continue
        if len(pieces) > 3:
            raise ConfigError(f"SLO class {part!r}: too many ':'; expected {_SYNTAX}")
        name = pieces[0].lower()
        if not _NAME.match(name):
            raise ConfigError(
                f"SLO class name {pieces[0]!r}: use a letter then letters, digits, '_', '-' or '.' (up to 32)"
            )
        if name == DEFAULT_CLASS:
            raise ConfigError(f"SLO class {part!r}: the default class takes no prompt rule")
        if any(c.name == name for c in named):
            raise ConfigError(f"SLO class {name!r} given twice")
        body = pieces[-1]
        if not body:
            raise ConfigError(f"SLO class {name!r}: no targets; expected e.g. {name}:ttft=1,tpot=0.05")
        if len(pieces) == 2 and _RULE.match(body.lower()):
            raise ConfigError(
                f"SLO class {name!r}: {body!r} needs targets after it, e.g. {name}:{body}:e2e=600"
            )
        rule = _rule(name, pieces[1]) if len(pieces) == 3 else None
        try:
            given = parse_slo_targets(body)
            slo = auto if not given else Slo.from_dict(given)
        except ConfigError as exc:
            raise ConfigError(f"SLO class {name!r}: {exc}") from None
        named.append(SloClass(name, slo, rule))
    return SloClasses(default if default is not None else auto, tuple(named))


def _default_slo(body: str, auto: Slo) -> Slo:
    """The default class: the keys given over ``auto`` (a TTFT given without a per-token part is flat)."""
    given = parse_slo_targets(body)
    base = auto.to_dict()
    if "ttft_s" in given:
        base.pop("ttft_per_token_s", None)
    return Slo.from_dict({**base, **given})


def type_slos(classes: SloClasses, trace: Trace, grid: Any) -> dict[str, Slo]:
    """Each type's planning target over ``trace`` typed by ``grid``: the strictest of the classes its requests
    are in (a type holding one class gets that class's targets; the default typing cuts at the prompt rules, so
    only a trace's class column mixes them). Types of the default class alone are left out."""
    if classes.single or len(trace) == 0:
        return {}
    names, _ = classes.assign(trace)
    types = grid.classify(trace)
    out = {}
    for k, type_name in enumerate(grid.names):
        present = sorted(set(names[types == k].tolist()))
        if present and present != [DEFAULT_CLASS]:
            out[type_name] = classes.strictest(present)
    return out

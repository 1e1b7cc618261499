"""Step specifications: the flowchart's node types.

A step has a stable dotted id (`data.import`), typed input and output ports, a parameter schema and the role
that owns it. Status values are the ones the flowchart shows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from runtime.domain.errors import ConfigError, did_you_mean


class StepStatus(StrEnum):
    NEVER_RUN = "never-run"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"  # stopped by a person (Cancel, Ctrl-C): a failed run that was_cancelled()
    WAITING = "waiting"  # for a person (a review); recorded as a failed run whose summary says {"waiting": true}
    STALE = "stale"
    DRIFTED = "drifted"
    SKIPPED = "skipped"


CANCELLED_BY_USER = "cancelled by the user"  # the runtime's reason where it stopped a job's worker process


def was_cancelled(error: str | None) -> bool:
    """A failed run a person stopped: the step saw the cancel at a checkpoint ("cancelled"), or the runtime
    stopped the job's worker process before it could (CANCELLED_BY_USER)."""
    return (error or "").split("\n", 1)[0] in ("cancelled", CANCELLED_BY_USER)


def run_ending(status: str, error: str | None, summary: dict[str, Any] | None) -> str:
    """How a recorded run ended as people read it: a failed run a person stopped is "cancelled", one that
    waits for a person (a review) "waiting"; any other keeps its status."""
    if status == "failed":
        if was_cancelled(error):
            return StepStatus.CANCELLED.value
        if (summary or {}).get("waiting"):
            return StepStatus.WAITING.value
    return status


class Role(StrEnum):
    DATA_ENGINEER = "data engineer"
    LABELER = "labeler"
    DATA_SCIENTIST = "data scientist"
    VALIDATOR = "validator"
    SOFTWARE_ENGINEER = "software engineer"
    DEVOPS_ENGINEER = "DevOps engineer"


@dataclass(frozen=True)
class Port:
    """A typed input or output. Two ports connect when their types are equal (checked by the model)."""

    name: str
    type: str


_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "bool": (bool,),
    "list": (list, tuple),
    "dict": (dict,),
    "any": (object,),
}


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: str
    default: Any = None
    help: str = ""
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    nullable: bool = False

    def check(self, value: Any, where: str) -> Any:
        """Return the value, coerced where harmless (int -> float); raise ConfigError naming `where`."""
        if value is None:
            if self.nullable or self.default is None:
                return None
            raise ConfigError(f"{where}: must not be empty")
        allowed = _TYPES[self.type]
        if self.type in ("int", "float") and isinstance(value, bool):
            raise ConfigError(f"{where}: expected {self.type}, got {value!r}")
        if not isinstance(value, allowed):
            raise ConfigError(f"{where}: expected {self.type}, got {type(value).__name__} {value!r}")
        if self.type == "float":
            value = float(value)
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{where}: must be one of {', '.join(map(str, self.choices))}; got {value!r}")
        if self.minimum is not None and value < self.minimum:
            raise ConfigError(f"{where}: must be >= {self.minimum}, got {value!r}")
        if self.maximum is not None and value > self.maximum:
            raise ConfigError(f"{where}: must be <= {self.maximum}, got {value!r}")
        return value


@dataclass(frozen=True)
class StepSpec:
    id: str
    title: str
    pipeline: str  # data | model | deploy
    role: Role
    inputs: tuple[Port, ...] = ()
    outputs: tuple[Port, ...] = ()
    params: tuple[ParamSpec, ...] = ()
    description: str = ""

    def param(self, name: str) -> ParamSpec:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def resolve_params(self, given: Mapping[str, Any] | None, where: str) -> dict[str, Any]:
        """Defaults merged with `given`; unknown names and wrong types raise ConfigError naming the field."""
        given = dict(given or {})
        known = {p.name for p in self.params}
        unknown = sorted(set(given) - known)
        if unknown:
            raise ConfigError(
                f"{where}: unknown parameter {unknown[0]!r} for step {self.id}"
                f"{did_you_mean(unknown[0], sorted(known))}"
                f" (known: {', '.join(sorted(known)) or 'none'})"
            )
        out: dict[str, Any] = {}
        for p in self.params:
            value = given.get(p.name, p.default)
            out[p.name] = p.check(value, f"{where}.{p.name}") if p.name in given else value
        return out

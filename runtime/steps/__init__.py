"""The step registry: every step the flowchart can show, by stable dotted id.

Step modules import their heavy libraries inside `run`, so loading the registry stays fast.
"""

from __future__ import annotations

import importlib

from runtime.domain.errors import ConfigError
from runtime.steps.base import Cancelled, Step, StepContext, StepResult

# Modules that define steps; each exposes STEPS, a list of Step subclasses.
_MODULES = ("runtime.steps.data", "runtime.steps.model", "runtime.steps.deploy", "runtime.steps.monitor")
_REGISTRY: dict[str, type[Step]] | None = None


def _load() -> dict[str, type[Step]]:
    global _REGISTRY
    if _REGISTRY is None:
        reg: dict[str, type[Step]] = {}
        for mod in _MODULES:
            for cls in importlib.import_module(mod).STEPS:
                reg[cls.spec.id] = cls
        _REGISTRY = reg
    return _REGISTRY


def known_steps() -> dict[str, type[Step]]:
    return dict(_load())


def get_step(step_id: str) -> Step:
    reg = _load()
    if step_id not in reg:
        raise ConfigError(f"unknown step {step_id!r} (known: {', '.join(sorted(reg))})")
    return reg[step_id]()


__all__ = ["Cancelled", "Step", "StepContext", "StepResult", "get_step", "known_steps"]

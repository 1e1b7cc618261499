"""Running steps: the in-process runner (`cdl run`), the event bus, and (later) worker processes."""

from __future__ import annotations

from runtime.jobs.bus import EventBus
from runtime.jobs.runner import JobResult, Runner, StepOutcome, StepState

__all__ = ["EventBus", "JobResult", "Runner", "StepOutcome", "StepState"]

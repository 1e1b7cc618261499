"""Events a job emits while it runs. The CLI draws them as progress bars, the studio as node colours, the
gRPC WatchJob stream sends them as they come. Events are plain data and cross process boundaries as dicts."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class EventKind(StrEnum):
    JOB_STARTED = "job-started"
    STARTED = "started"  # a step started
    PROGRESS = "progress"  # fraction in [0, 1] and a message
    LOG = "log"
    METRIC = "metric"  # data: {"name": value, ..., "epoch": n, "trial": n}
    FINISHED = "finished"  # a step finished; data: its summary
    FAILED = "failed"  # a step failed; message: the reason
    SKIPPED = "skipped"  # a step was up to date
    STATUS = "status"  # a step's status changed outside a run (stale, drifted)
    JOB_FINISHED = "job-finished"  # data: {"status": done|failed|cancelled}


@dataclass(frozen=True)
class Event:
    kind: EventKind
    step: str | None = None
    job: str | None = None
    fraction: float | None = None
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)
    seq: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kind"] = self.kind.value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Event:
        d = dict(d)
        d["kind"] = EventKind(d["kind"])
        return cls(**d)

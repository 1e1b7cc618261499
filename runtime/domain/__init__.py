"""Plain typed entities of the engine: no ORM, no Qt, no protobuf.

Everything here is frozen and safe to hand across threads and processes. The store converts its rows into
these; the studio, the CLI and the gRPC servicer only ever see these.
"""

from __future__ import annotations

from runtime.domain.entities import (
    CleanedEntry,
    DatasetVersion,
    Item,
    LabelRecord,
    QuarantineEntry,
    SourceRecord,
    StepRun,
)
from runtime.domain.errors import (
    CdlError,
    ConfigError,
    DataImportError,
    NotFoundError,
    StepFailed,
    WorkspaceError,
)
from runtime.domain.events import Event, EventKind
from runtime.domain.steps import ParamSpec, Port, Role, StepSpec, StepStatus

__all__ = [
    "CdlError",
    "CleanedEntry",
    "ConfigError",
    "DataImportError",
    "DatasetVersion",
    "Event",
    "EventKind",
    "Item",
    "LabelRecord",
    "NotFoundError",
    "ParamSpec",
    "Port",
    "QuarantineEntry",
    "Role",
    "SourceRecord",
    "StepFailed",
    "StepRun",
    "StepSpec",
    "StepStatus",
    "WorkspaceError",
]

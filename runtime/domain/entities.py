"""Frozen records handed out by the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class SourceRecord:
    name: str  # stable key of the source (its path as configured)
    kind: str  # text-folder | idx | image-folder | csv | label-studio
    content_hash: str
    items: int
    imported_at: datetime


@dataclass(frozen=True)
class Item:
    """One data item. `uid` is stable per source location; `id` is the sha256 of the content, so exact
    duplicates share an id."""

    uid: str
    id: str
    kind: str  # text | image
    source: str
    source_label: str | None = None
    source_split: str | None = None
    pack: str = ""
    offset: int = 0
    length: int = 0
    encoding: str = ""  # bytes (text/raw file) | npy (decoded image row)
    split: str | None = None


@dataclass(frozen=True)
class LabelRecord:
    id: int
    item_id: str
    label: str | None
    labeler: str
    source: str  # import | manual | model
    action: str  # label | skip
    created: datetime
    dataset_version: str | None = None
    task_ref: str | None = None
    undone: bool = False


@dataclass(frozen=True)
class DatasetVersion:
    id: str  # "v1", "v2", ...
    number: int
    dvc_hash: str
    git_commit: str | None
    items: int
    classes: dict[str, int]
    splits: dict[str, int]
    created: datetime
    dvc_file: str = ""
    split_classes: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class QuarantineEntry:
    version: str
    item: str  # uid
    item_id: str
    source: str
    rule: str
    reason: str


@dataclass(frozen=True)
class CleanedEntry:
    version: str
    item: str
    item_id: str
    source: str
    action: str


@dataclass(frozen=True)
class StepRun:
    id: int
    step: str
    job: str | None
    status: str
    started: datetime
    finished: datetime | None
    input_fp: str
    output_fp: str | None
    error: str | None
    summary: dict[str, Any]
    params: dict[str, Any] | None = None  # the parameters it ran with (None: recorded before schema 0007)
    message: str | None = None  # the one-line result it finished with (None: before schema 0008)
    pid: int | None = None  # the process that ran (runs) it
    host: str | None = None  # the machine of that process

    @property
    def duration(self) -> float | None:
        if self.finished is None:
            return None
        return (self.finished - self.started).total_seconds()


@dataclass(frozen=True)
class TransformRecord:
    key: str
    dataset_version: str
    spec_hash: str
    spec: dict[str, Any]
    path: str
    stats: dict[str, Any]
    created: datetime


@dataclass(frozen=True)
class Experiment:
    id: int
    name: str
    kind: str  # tune | train
    step: str
    job: str | None
    dataset_version: str
    transform: str
    framework: str
    template: str
    study: str | None
    git_commit: str | None
    git_dirty: bool
    status: str
    created: datetime
    finished: datetime | None
    summary: dict[str, Any]


@dataclass(frozen=True)
class Trial:
    id: int
    experiment_id: int
    number: int
    params: dict[str, Any]
    state: str
    value: float | None
    epochs: int
    started: datetime
    finished: datetime | None
    worker: str | None = None  # host:pid of the tuning worker that ran it
    retry_of: int | None = None  # the number of the trial (of a dead worker) this one runs again


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: int
    framework: str
    template: str
    dataset_version: str
    transform: str
    experiment_id: int | None
    trial_id: int | None
    tune_experiment_id: int | None
    params: dict[str, Any]
    metrics: dict[str, Any]
    evaluation: dict[str, Any]
    artifacts: dict[str, Any]
    git_commit: str | None
    git_dirty: bool
    classes: list[str]
    created: datetime
    aliases: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class AliasRecord:
    name: str
    alias: str
    version: int
    since: datetime
    until: datetime | None
    reason: str


@dataclass(frozen=True)
class Review:
    name: str
    version: int
    reviewer: str
    decision: str
    comment: str
    automatic: bool
    created: datetime


@dataclass(frozen=True)
class JobRecord:
    id: str
    status: str
    spec: dict[str, Any]
    created: datetime
    started: datetime | None
    finished: datetime | None
    error: str | None
    pid: int | None
    host: str | None = None  # of the runtime that owns the job
    runtime_pid: int | None = None


@dataclass(frozen=True)
class Variant:
    name: str
    version: int
    variant: str
    method: str
    status: str
    artifact: str | None
    size_bytes: int | None
    params: dict[str, Any]
    metrics: dict[str, Any]
    message: str
    bundle: str | None
    created: datetime


@dataclass(frozen=True)
class Device:
    name: str
    address: str
    token: str
    cert_fingerprint: str
    enroll_dir: str
    created: datetime
    last_seen: datetime | None
    last_health: dict[str, Any]


@dataclass(frozen=True)
class Deployment:
    id: int
    device: str
    action: str
    name: str | None
    version: int | None
    variant: str | None
    bundle: str | None
    status: str
    message: str
    time: datetime

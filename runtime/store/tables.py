"""SQLModel tables of the registry. Private to runtime.store: rows never leave the store class."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, Text
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class SqlSource(SQLModel, table=True):
    __tablename__ = "cdl_source"
    name: str = Field(primary_key=True)
    kind: str
    content_hash: str
    items: int
    imported_at: datetime = Field(default_factory=utcnow)
    options: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))


class SqlItem(SQLModel, table=True):
    __tablename__ = "cdl_item"
    uid: str = Field(primary_key=True)
    id: str = Field(index=True)
    kind: str
    source: str
    source_name: str = Field(index=True)
    source_label: str | None = None
    source_split: str | None = None
    pack: str
    offset: int
    length: int
    encoding: str
    split: str | None = None


class SqlLabel(SQLModel, table=True):
    __tablename__ = "cdl_label"
    __table_args__ = (Index("ix_cdl_label_item_action", "item_id", "action"),)
    id: int | None = Field(default=None, primary_key=True)
    item_id: str
    label: str | None = None
    labeler: str
    source: str  # import | manual | model
    action: str = "label"  # label | skip
    created: datetime = Field(default_factory=utcnow)
    dataset_version: str | None = None
    task_ref: str | None = None
    undone: bool = False
    undone_at: datetime | None = None


class SqlLabelLease(SQLModel, table=True):
    """The item a labeler has open, not handed to another labeler until `until` (schema 0006)."""

    __tablename__ = "cdl_label_lease"
    item_id: str = Field(primary_key=True)
    labeler: str = Field(index=True)
    until: datetime


class SqlDatasetVersion(SQLModel, table=True):
    __tablename__ = "cdl_dataset_version"
    number: int = Field(primary_key=True)
    id: str = Field(index=True, unique=True)
    dvc_hash: str = Field(index=True)
    git_commit: str | None = None
    items: int
    classes: dict[str, int] = Field(default_factory=dict, sa_column=Column(JSON))
    splits: dict[str, int] = Field(default_factory=dict, sa_column=Column(JSON))
    split_classes: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    created: datetime = Field(default_factory=utcnow)
    dvc_file: str = Field(default="", sa_column=Column(Text))


class SqlQuarantine(SQLModel, table=True):
    __tablename__ = "cdl_quarantine"
    id: int | None = Field(default=None, primary_key=True)
    version: str = Field(index=True)
    uid: str
    item_id: str
    source: str
    rule: str
    reason: str = Field(sa_column=Column(Text))


class SqlCleaned(SQLModel, table=True):
    __tablename__ = "cdl_cleaned"
    id: int | None = Field(default=None, primary_key=True)
    version: str = Field(index=True)
    uid: str
    item_id: str
    source: str
    action: str = Field(sa_column=Column(Text))


class SqlStepRun(SQLModel, table=True):
    __tablename__ = "cdl_step_run"
    id: int | None = Field(default=None, primary_key=True)
    step: str = Field(index=True)
    job: str | None = None
    pid: int | None = None
    host: str | None = None  # the machine the pid is on (schema 0003)
    status: str
    started: datetime = Field(default_factory=utcnow)
    finished: datetime | None = None
    input_fp: str = ""
    output_fp: str | None = None
    error: str | None = Field(default=None, sa_column=Column(Text))
    summary: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    params: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))  # what it ran with (schema 0007)
    message: str | None = Field(default=None, sa_column=Column(Text))  # its one-line result (schema 0008)


class SqlState(SQLModel, table=True):
    """Small workspace state: the checked-out dataset version, the workspace's counters."""

    __tablename__ = "cdl_state"
    key: str = Field(primary_key=True)
    value: Any = Field(default=None, sa_column=Column(JSON))


# -- model pipeline -----------------------------------------------------------------------------------------


class SqlTransform(SQLModel, table=True):
    """The transformation registry: cached tensors keyed by (dataset version, transform spec hash)."""

    __tablename__ = "cdl_transform"
    key: str = Field(primary_key=True)
    dataset_version: str = Field(index=True)
    spec_hash: str
    spec: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    path: str
    stats: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    created: datetime = Field(default_factory=utcnow)


class SqlExperiment(SQLModel, table=True):
    __tablename__ = "cdl_experiment"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True)
    kind: str  # tune | train
    step: str
    job: str | None = None
    dataset_version: str
    transform: str
    framework: str
    template: str
    study: str | None = None  # Optuna study name (tune)
    git_commit: str | None = None
    git_dirty: bool = False
    status: str = "running"
    created: datetime = Field(default_factory=utcnow)
    finished: datetime | None = None
    summary: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))


class SqlTrial(SQLModel, table=True):
    __tablename__ = "cdl_trial"
    id: int | None = Field(default=None, primary_key=True)
    experiment_id: int = Field(index=True)
    number: int
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    state: str = "running"  # running | complete | pruned | failed
    value: float | None = None
    epochs: int = 0
    started: datetime = Field(default_factory=utcnow)
    finished: datetime | None = None
    worker: str | None = None  # host:pid of the process that ran it (schema 0002)
    retry_of: int | None = None  # the number of the trial this one runs again, its worker having died (0004)


class SqlMetric(SQLModel, table=True):
    __tablename__ = "cdl_metric"
    __table_args__ = (Index("ix_cdl_metric_trial", "trial_id", "epoch"),)
    id: int | None = Field(default=None, primary_key=True)
    trial_id: int
    epoch: int
    name: str
    value: float


class SqlModelVersion(SQLModel, table=True):
    __tablename__ = "cdl_model_version"
    __table_args__ = (Index("ix_cdl_model_name_version", "name", "version", unique=True),)
    id: int | None = Field(default=None, primary_key=True)
    name: str
    version: int
    framework: str
    template: str
    dataset_version: str
    transform: str
    experiment_id: int | None = None
    trial_id: int | None = None
    tune_experiment_id: int | None = None
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    evaluation: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    artifacts: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    git_commit: str | None = None
    git_dirty: bool = False
    classes: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    created: datetime = Field(default_factory=utcnow)
    extra: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))


class SqlAlias(SQLModel, table=True):
    """Alias history: one row per (alias, version) holding; `until` is set when another version takes it."""

    __tablename__ = "cdl_alias"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True)
    alias: str
    version: int
    since: datetime = Field(default_factory=utcnow)
    until: datetime | None = None
    reason: str = ""


class SqlReview(SQLModel, table=True):
    __tablename__ = "cdl_review"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True)
    version: int
    reviewer: str
    decision: str  # approved | rejected
    comment: str = Field(default="", sa_column=Column(Text))
    automatic: bool = False
    created: datetime = Field(default_factory=utcnow)


class SqlJob(SQLModel, table=True):
    __tablename__ = "cdl_job"
    id: str = Field(primary_key=True)
    status: str = "queued"  # queued | running | done | failed | cancelled
    spec: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    created: datetime = Field(default_factory=utcnow)
    started: datetime | None = None
    finished: datetime | None = None
    error: str | None = Field(default=None, sa_column=Column(Text))
    pid: int | None = None  # the job's worker process
    host: str | None = None  # the machine of the runtime that owns the job (schema 0005)
    runtime_pid: int | None = None  # that runtime's process (schema 0005)


class SqlJobEvent(SQLModel, table=True):
    __tablename__ = "cdl_job_event"
    __table_args__ = (Index("ix_cdl_job_event_job_seq", "job", "seq"),)
    id: int | None = Field(default=None, primary_key=True)
    job: str
    seq: int
    kind: str
    step: str | None = None
    fraction: float | None = None
    message: str = Field(default="", sa_column=Column(Text))
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    time: float = 0.0


# -- deployment ---------------------------------------------------------------------------------------------


class SqlVariant(SQLModel, table=True):
    """A compressed (or exported) variant of a model version, with its revision figures."""

    __tablename__ = "cdl_variant"
    __table_args__ = (Index("ix_cdl_variant_model", "name", "version", "variant", unique=True),)
    id: int | None = Field(default=None, primary_key=True)
    name: str
    version: int
    variant: str
    method: str
    status: str  # ok | skipped | failed
    artifact: str | None = None  # sha256 of the ONNX file
    size_bytes: int | None = None
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    message: str = Field(default="", sa_column=Column(Text))
    bundle: str | None = None  # sha256 of the signed bundle
    created: datetime = Field(default_factory=utcnow)


class SqlDevice(SQLModel, table=True):
    __tablename__ = "cdl_device"
    name: str = Field(primary_key=True)
    address: str
    token: str
    cert_fingerprint: str
    enroll_dir: str
    created: datetime = Field(default_factory=utcnow)
    last_seen: datetime | None = None
    last_health: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))


class SqlDeployment(SQLModel, table=True):
    __tablename__ = "cdl_deployment"
    id: int | None = Field(default=None, primary_key=True)
    device: str = Field(index=True)
    action: str  # deploy | rollback
    name: str | None = None
    version: int | None = None
    variant: str | None = None
    bundle: str | None = None
    status: str  # done | failed
    message: str = Field(default="", sa_column=Column(Text))
    time: datetime = Field(default_factory=utcnow)

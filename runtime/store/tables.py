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
    status: str
    started: datetime = Field(default_factory=utcnow)
    finished: datetime | None = None
    input_fp: str = ""
    output_fp: str | None = None
    error: str | None = Field(default=None, sa_column=Column(Text))
    summary: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))


class SqlState(SQLModel, table=True):
    """Small workspace state: the checked-out dataset version, the workspace's counters."""

    __tablename__ = "cdl_state"
    key: str = Field(primary_key=True)
    value: Any = Field(default=None, sa_column=Column(JSON))

"""The workspace on disk: git + DVC + cdl.yaml + the registry + artifacts."""

from __future__ import annotations

from runtime.workspace.workspace import TEMPLATES, Workspace

__all__ = ["TEMPLATES", "Workspace"]

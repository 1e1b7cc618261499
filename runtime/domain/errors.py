"""Domain errors. Each message names the file, row or field at fault, so a user can act on it."""

from __future__ import annotations


class CdlError(Exception):
    """Base of every error the engine raises on purpose (shown to users without a traceback)."""


class ConfigError(CdlError):
    """cdl.yaml or a parameter override is wrong."""


class WorkspaceError(CdlError):
    """The workspace folder is missing, not initialised, or in a state the action cannot handle."""


class DataImportError(CdlError):
    """A data source cannot be imported; nothing of it was written."""


class NotFoundError(CdlError):
    """A named entity (version, model, item, device) does not exist."""


class StepFailed(CdlError):
    """A step ended in failure; the message is the reason shown on the flowchart."""

    def __init__(self, step_id: str, reason: str):
        super().__init__(f"{step_id}: {reason}")
        self.step_id = step_id
        self.reason = reason


class GateFailed(StepFailed):
    """An evaluation gate was not met (a failed gate fails the step and the CI run)."""


def did_you_mean(value: object, known: list[str] | tuple[str, ...]) -> str:
    """' (did you mean 'x'?)' for the known word closest to a misspelt `value`, or '' when none is close: what an
    error about an unknown name adds."""
    import difflib

    close = difflib.get_close_matches(str(value), list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""

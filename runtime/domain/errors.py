"""Domain errors. Each message names the file, row or field at fault, so a user can act on it."""

from __future__ import annotations

from typing import Any


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


class AwaitingPerson(StepFailed):
    """The step waits for a person (a review): the run stops there, as on a failure (`cdl run` exits 1), but the
    step is shown waiting, not failed."""

    summary = {"waiting": True}


class GateFailed(StepFailed):
    """An evaluation gate was not met (a failed gate fails the step and the CI run)."""


class UserCodeError(CdlError):
    """The workspace's own code (a src:FILE.py model) failed: the message says where in it (the step's one line
    said "TypeError: build_model() takes 2 positional arguments but 3 were given", or "IndexError: Target 4 is out
    of bounds" from deep inside the loss), and `traceback` keeps the whole of it for `cdl runs STEP --json`."""

    def __init__(self, message: str, exc: BaseException | None = None):
        import traceback

        super().__init__(message + (user_code_frame(exc.__traceback__) if exc is not None else ""))
        self.traceback = "".join(traceback.format_exception(exc)) if exc is not None else None


def user_code_frame(tb: Any) -> str:  # noqa: ANN401 - a traceback object
    """' (src/model.py, line 3, in build_model)': the innermost frame of the workspace's own code in a traceback,
    or '' where none is."""
    import traceback
    from pathlib import Path

    def mine(filename: str) -> bool:
        if filename.startswith("src/"):  # a model's kept code (runtime.ml.common.user_builder compiles it so)
            return True
        p = Path(filename)
        return p.parent.name == "src" and (p.parent.parent / "cdl.yaml").is_file()

    frames = [f for f in traceback.extract_tb(tb) if mine(f.filename)]
    if not frames:
        return ""
    f = frames[-1]
    name = f.filename if f.filename.startswith("src/") else f"src/{Path(f.filename).name}"
    return f" ({name}, line {f.lineno}, in {f.name})"


def first_line(text: object, limit: int = 240) -> str:
    """The first line of an error's text, cut at a word before `limit` characters with '…' where it is longer: what a
    status line or a message names of an error whose whole text is kept elsewhere (it was cut mid-word, without a
    mark, so a reader took the rest for lost)."""
    line = str(text or "").strip().split("\n", 1)[0].rstrip()
    if len(line) <= limit:
        return line
    cut = line[:limit - 1]
    word = cut.rsplit(" ", 1)[0]
    return (word if len(word) > limit // 2 else cut).rstrip(" ,;:(") + "…"


def did_you_mean(value: object, known: list[str] | tuple[str, ...]) -> str:
    """' (did you mean 'x'?)' for the known word closest to a misspelt `value`, or '' when none is close: what an
    error about an unknown name adds."""
    import difflib

    close = difflib.get_close_matches(str(value), list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def os_error_text(exc: OSError) -> str:
    """"/proc/nope: no such file or directory"; "a -> b: permission denied" for a rename."""
    what = (exc.strerror or str(exc) or type(exc).__name__).rstrip(".")
    what = what[:1].lower() + what[1:]
    if exc.filename is None:
        return what
    return f"{exc.filename}" + (f" -> {exc.filename2}" if exc.filename2 is not None else "") + f": {what}"

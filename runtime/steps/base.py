"""What a step is, and what it gets while it runs.

A step implementation subclasses `Step`, sets `spec`, and implements:
- `fingerprint(ctx)`: a hash of the inputs that do not come from upstream steps (source files, the labels
  table); the engine adds the parameters and the upstream steps' output fingerprints;
- `run(ctx) -> StepResult`: does the work, reporting through ctx.progress/log/metric, and returns a summary
  (plain JSON data shown by the CLI, the studio and CI) and an output fingerprint (what downstream steps
  depend on). Raising StepFailed (or any exception) fails the step; nothing it half-did may be visible.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from runtime.domain.events import Event, EventKind
from runtime.domain.steps import StepSpec, StepStatus

if TYPE_CHECKING:
    from runtime.workspace.config import PipelineConfig
    from runtime.workspace.workspace import Workspace


class Cancelled(Exception):
    """Raised inside a step when its job was cancelled."""


@dataclass
class StepResult:
    summary: dict[str, Any] = field(default_factory=dict)
    output_fp: str = ""
    message: str = ""
    status: StepStatus = StepStatus.DONE  # DONE, or DRIFTED for the monitor


class StepContext:
    def __init__(
        self,
        workspace: Workspace,
        step: str,
        params: dict[str, Any],
        config: PipelineConfig,
        emit: Callable[[Event], None],
        job: str | None = None,
        cancel: threading.Event | None = None,
        given: frozenset[str] = frozenset(),
    ):
        self.workspace = workspace
        self.given = given  # the parameters this run was given (cdl run --set), over cdl.yaml
        self.store = workspace.store
        self.step = step
        self.params = params
        self.config = config
        self.job = job
        self._emit = emit
        self._cancel = cancel or threading.Event()

    def emit(self, kind: EventKind, message: str = "", fraction: float | None = None, **data: Any) -> None:
        self._emit(Event(kind, step=self.step, job=self.job, fraction=fraction, message=message, data=data))

    def progress(self, fraction: float, message: str = "") -> None:
        self.check_cancelled()
        self.emit(EventKind.PROGRESS, message, fraction=max(0.0, min(1.0, float(fraction))))

    def log(self, message: str) -> None:
        self.emit(EventKind.LOG, message)

    def metric(self, **values: Any) -> None:
        self.emit(EventKind.METRIC, "", **values)

    def check_cancelled(self) -> None:
        if self._cancel.is_set():
            raise Cancelled(f"{self.step}: cancelled")

    def sleep(self, seconds: float) -> None:
        """Wait, but stop (Cancelled) as soon as the run is cancelled."""
        self._cancel.wait(seconds)
        self.check_cancelled()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()


class Step:
    spec: ClassVar[StepSpec]
    # what fingerprint() covers, as a stale reason names it ("labels changed since it ran"); `reads_changed`, where
    # set, is the whole reason when only that changed
    reads: ClassVar[str] = "inputs"
    reads_changed: ClassVar[str] = ""
    # the step changes what it reads (model.review's automatic review adds the review its fingerprint covers): the
    # runner takes its input fingerprint again when it has finished, or it read as stale right after it ran
    changes_own_reads: ClassVar[bool] = False

    def fingerprint(self, ctx: StepContext) -> str:
        return ""

    def never_run_note(self, ws: Any) -> str:  # noqa: ANN401
        """What a step that has never run says beside "never run" (its reason), where the work it does was done
        outside the pipeline: "" for most steps."""
        return ""

    def running_note(self, ws: Any, run: Any) -> tuple[str, float | None]:  # noqa: ANN401
        """How far the running `run` has got, as the registry records it (for `cdl status` and the studio, which
        see a step that another process runs), in words and as a share done (None: not known): ("", None) for
        most steps."""
        return "", None

    def unmet(self, ws: Any) -> str:  # noqa: ANN401
        """Why the step must run again although its inputs are those it ran with (what it made no longer holds),
        or "": it then runs as a stale step does, and says this as its reason."""
        return ""

    def waiting_note(self, ws: Any, run: Any) -> str:  # noqa: ANN401
        """What a step whose last `run` waits for a person says after that run's reason, where what it waited for
        has come since: "" for most steps."""
        return ""

    def done_note(self, ws: Any, run: Any) -> str:  # noqa: ANN401
        """What a step that is done and up to date says beside "done", where what it made was changed outside the
        pipeline since `run`: "" for most steps."""
        return ""

    def needs(self, params: dict[str, Any], config: PipelineConfig) -> set[str] | None:
        """Steps that must have run before this one runs alone (`cdl run STEP`); None: its direct upstream."""
        return None

    def check_params(self, params: dict[str, Any]) -> None:
        """Checks beyond each parameter's type and range (a list's entries, a mapping's shape); raises
        ConfigError naming the field. The studio's Parameters dialog runs it before it saves."""

    def check_in(self, params: dict[str, Any], config: PipelineConfig) -> None:
        """Checks of the parameters against the rest of the pipeline (its task, another step's parameters), run
        with check_params before a run starts anything; raises ConfigError naming the field."""

    def check_here(self, params: dict[str, Any], ws: Any) -> None:  # noqa: ANN401
        """Checks of the parameters against the workspace's records (the devices enrolled), run with check_in
        before a run starts anything; raises ConfigError naming the field."""

    def run(self, ctx: StepContext) -> StepResult:
        raise NotImplementedError


def misspelt(value: str, words: tuple[str, ...]) -> str | None:
    """The word of `words` that a bare `value` (no ':', '@' or '/') is one or two letters from, if any: "champoin"
    for champion was taken as a model's name, and failed only when the step ran."""
    import difflib

    if value in words or any(c in value for c in ":@/."):
        return None
    close = difflib.get_close_matches(value, words, n=1, cutoff=0.75)
    return close[0] if close else None


def hash_text(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(repr(p).encode())
        h.update(b"\0")
    return h.hexdigest()

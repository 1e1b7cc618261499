"""What every panel shares: the studio context, an asynchronous refresh, and a plain notice for what the
engine cannot do yet or what went wrong. Panels never import each other; the window wires them with signals."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFrame, QLabel, QScrollArea, QVBoxLayout, QWidget

from studio.services.tasks import run_task
from studio.widgets.common import heading, notice, set_notice


@dataclass
class StudioContext:
    root: Path
    workspace: Any  # runtime.api.Workspace
    runtime: Any  # studio.services.runtime.RuntimeConnection


class Panel(QWidget):
    panel_id = "panel"
    title = "Panel"
    steps: tuple[str, ...] = ()

    sig_loaded = Signal()
    sig_run = Signal(object, object, object)  # steps (list or None), until (str or None), overrides (dict or None)
    sig_message = Signal(str)
    sig_event = Signal(object)  # a runtime Event of a step this panel runs in the studio's process (data.import)
    sig_progress = Signal(str)  # how far an action under way is, emitted from its worker thread

    def __init__(self, ctx: StudioContext, parent: QWidget | None = None):
        super().__init__(parent)
        self.ctx = ctx
        self.loaded = False
        self.in_progress: dict[object, str] = {}  # actions under way: {key: what the panel said of it}
        # the panel's content scrolls where the window is smaller than it (a laptop's 768 pixels): the review panel
        # alone made the window 813 pixels tall at the least, taller than such a screen
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # a click beside the widgets focuses the panel (its keys)
        content = _Content()
        self.scroll.setWidget(content)
        outer.addWidget(self.scroll)
        self.layout_ = QVBoxLayout(content)
        self.layout_.setContentsMargins(12, 8, 12, 8)
        self.heading = heading(self.title, 13)
        self.layout_.addWidget(self.heading)
        self.status_label: QLabel = notice("")
        self.status_label.setVisible(False)
        self.layout_.addWidget(self.status_label)
        self.sig_progress.connect(self._progress_said)  # a method of this widget: delivered in the GUI thread
        self.build()

    # -- for subclasses -----------------------------------------------------------------------------------

    def build(self) -> None:
        """Create the widgets (GUI thread, no I/O)."""

    def load(self) -> Any:
        """Read what the panel shows (runs in a worker thread; returns plain data)."""
        return None

    def show_data(self, data: Any) -> None:
        """Put the loaded data into the widgets (GUI thread)."""

    # -- machinery ----------------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Load in a worker; a refresh asked for while one is in flight runs once after it."""
        if getattr(self, "_loading", False):
            self._pending = True
            return
        self._loading = True
        self._pending = False
        run_task(self.load, on_done=self._loaded, on_error=self._failed)

    def _settle(self) -> bool:
        self._loading = False
        if getattr(self, "_pending", False):
            self.refresh()
            return False
        return True

    def _loaded(self, data: Any) -> None:
        if not self._settle():
            return
        try:
            self.show_data(data)
        except Exception as exc:  # noqa: BLE001 - a panel must not take the window down
            import traceback

            traceback.print_exc()
            self.say(f"{type(exc).__name__}: {exc}", "error")
        self.loaded = True
        self.sig_loaded.emit()

    def _failed(self, message: str) -> None:
        if not self._settle():
            return
        self.say(message, "error")
        self.loaded = True
        self.sig_loaded.emit()

    def say(self, text: str, kind: str = "info") -> None:
        set_notice(self.status_label, text, kind)

    def _progress_said(self, text: str) -> None:
        if self.in_progress:  # not once the action ended: what it said then stays
            self.say(text, "info")

    def say_empty(self, text: str | None) -> None:
        """A load's "nothing here yet" notice (text), or None when there is something: then only that notice goes,
        and what an action said (a Save bundle…, a delete) stays, where every reload cleared it."""
        if text:
            self.say(text)
            self._said_empty = True
        elif getattr(self, "_said_empty", False):
            self.say("")
            self._said_empty = False

    def work(self, fn: Callable[..., Any], *args: Any, done: Callable[[Any], None] | None = None,
             message: str = "") -> None:
        """Run an action off the GUI thread; refresh afterwards; show errors plainly. An action with a message is
        in `in_progress` until it ends (closing the window names it in its question)."""
        key = object()
        if message:
            self.say(message, "info")
            self.in_progress[key] = message

        def ok(result: Any) -> None:
            self.in_progress.pop(key, None)
            if done is not None:
                done(result)
            self.refresh()

        def failed(m: str) -> None:
            self.in_progress.pop(key, None)
            self.say(m, "error")

        run_task(fn, *args, on_done=ok, on_error=failed)

    def set_step(self, step: str) -> None:
        """The flowchart's selected step (panels that serve several steps may adapt)."""

    def on_event(self, event: Any) -> None:
        """A runtime event (any job): panels that show live data override this."""

    def can_cancel_own(self) -> bool:
        """Whether work this panel runs in the studio's process (not in the runtime) can be cancelled now."""
        return False

    def cancel_own(self) -> None:
        """Cancel that work (the job bar's Cancel, where no runtime job runs)."""

    def add(self, widget: QWidget, stretch: int = 0) -> QWidget:
        self.layout_.addWidget(widget, stretch)
        return widget


class _Content(QWidget):
    """A panel's content in its scroll area, which sizes content whose rows wrap (a flow row of buttons) at its
    height for the width, and Qt's is the sum of the parts' preferred heights: the data panel asked 1014 pixels at
    1366 x 768 and scrolled, its summary under the fold, though its table could shrink. The height asked is the
    least the parts need at that width; the scroll area gives more where the viewport has it."""

    def heightForWidth(self, width: int) -> int:  # noqa: N802 - Qt's name
        lay = self.layout()
        if lay is not None and lay.hasHeightForWidth():
            return lay.totalMinimumHeightForWidth(width)
        return super().heightForWidth(width)

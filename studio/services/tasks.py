"""Work off the GUI thread: a function runs in Qt's thread pool; its result comes back through a queued signal.

The window never waits on the runtime, a file, a database or a device: every such call goes through here (or
through a stream thread in RuntimeConnection)."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

_LIVE: set[Task] = set()


class _Signals(QObject):
    done = Signal(object)
    failed = Signal(str)


class Task(QRunnable):
    def __init__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any):
        super().__init__()
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.signals = _Signals()
        self.setAutoDelete(False)

    def run(self) -> None:
        try:
            result = self.fn(*self.args, **self.kwargs)
        except Exception as exc:  # noqa: BLE001 - shown to the user
            from runtime.domain.errors import CdlError

            details = getattr(exc, "details", None)  # a gRPC error from the runtime: its message, not its repr
            if isinstance(exc, CdlError):
                msg = str(exc)
            elif isinstance(exc, ValueError) and "closed channel" in str(exc):
                # a call queued before the window closed its runtime connection (closing the studio): no bug to
                # print a traceback for
                msg = "the connection to the runtime was closed"
            elif callable(details) and details():
                msg = f"the runtime says: {details()}"
            else:
                msg = f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
            self._emit(self.signals.failed, msg)
        else:
            self._emit(self.signals.done, result)

    @staticmethod
    def _emit(signal: Any, value: Any) -> None:  # noqa: ANN401
        """A result that comes back after the window closed (a status read still running when the studio quits)
        has nobody to go to: it printed "RuntimeError: Signal source has been deleted" with a traceback."""
        try:
            signal.emit(value)
        except RuntimeError as exc:
            if "deleted" not in str(exc):
                raise


def run_task(fn: Callable[..., Any], *args: Any, on_done: Callable[[Any], None] | None = None,
             on_error: Callable[[str], None] | None = None, **kwargs: Any) -> Task:
    task = Task(fn, *args, **kwargs)
    _LIVE.add(task)

    def finish(_: Any = None) -> None:
        _LIVE.discard(task)

    if on_done is not None:
        task.signals.done.connect(on_done)
    if on_error is not None:
        task.signals.failed.connect(on_error)
    task.signals.done.connect(finish)
    task.signals.failed.connect(finish)
    QThreadPool.globalInstance().start(task)
    return task


def wait_all(timeout_ms: int = 30000) -> bool:
    return QThreadPool.globalInstance().waitForDone(timeout_ms)

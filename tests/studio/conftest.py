"""Studio tests: real workspaces, a real runtime process, pytest-qt offscreen."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _quit_without_asking(monkeypatch):
    """A window closed at a test's end with a run still going would wait on a modal question; the test of that
    question turns it back on for its window."""
    from studio.app.window import MainWindow

    monkeypatch.setattr(MainWindow, "ASK_BEFORE_QUIT", False)


@pytest.fixture
def studio_ctx(packaged, qtbot):
    """A StudioContext on the packaged workspace with a real runtime process."""
    from studio.panels.base import StudioContext
    from studio.services.runtime import RuntimeConnection

    rt = RuntimeConnection(packaged.root)
    with qtbot.waitSignal(rt.sig_ready, timeout=30000):
        rt.start()
    yield StudioContext(packaged.root, packaged, rt)
    rt.stop()


def load(qtbot, panel) -> None:  # noqa: ANN001
    with qtbot.waitSignal(panel.sig_loaded, timeout=30000):
        panel.refresh()

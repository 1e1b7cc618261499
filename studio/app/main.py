"""`cdl studio [WORKSPACE]`: the window on a qasync event loop. `--screenshot FILE [--panel ID]` opens, waits
until the workspace (and that panel) is loaded, saves a grab of the window and exits."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="cdl studio")
    p.add_argument("workspace", nargs="?", type=Path)
    p.add_argument("--screenshot", type=Path, help="save a PNG of the window once loaded, then exit")
    p.add_argument("--panel", help="the panel to show first (data, labeling, versions, tuning, models, review, "
                   "compression, devices, monitoring)")
    p.add_argument("--runtime", help="connect to a running `cdl runtime serve` at this address")
    p.add_argument("--size", help="window size WxH (default 1500x920, or the screen where that does not fit)")
    return p.parse_args(argv)


DEFAULT_SIZE = "1500x920"
TITLE_BAR = 40  # the window manager's title bar and frame, which the available geometry does not leave room for


def initial_size(w: int, h: int, screen_w: int, screen_h: int) -> tuple[int, int, bool]:
    """The window's first size on a screen with this much room: the default where it fits, else maximized (on a
    1366 x 768 laptop the studio opened at 1500 x 920, its right edge and its job bar off the screen)."""
    if w <= screen_w and h + TITLE_BAR <= screen_h:
        return w, h, False
    return min(w, screen_w), min(h, max(300, screen_h - TITLE_BAR)), True


def run_studio(argv: list[str] | None = None) -> int:
    args = parse(list(sys.argv[1:] if argv is None else argv))
    import qasync
    from PySide6.QtWidgets import QApplication

    from studio.app.window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("CDL Studio")
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    w, h = (int(x) for x in (args.size or DEFAULT_SIZE).lower().split("x"))
    window = MainWindow(None, args.runtime)  # shown at once; the workspace opens on the loop's first turns
    screen = app.primaryScreen()
    maximize = False
    if args.size is None and not args.screenshot and screen is not None:  # a screenshot keeps its size, anywhere
        avail = screen.availableGeometry()
        w, h, maximize = initial_size(w, h, avail.width(), avail.height())
    window.resize(w, h)
    if maximize:
        window.showMaximized()
    else:
        window.show()

    def first_panel() -> None:
        step = next((s for s, p in window.step_panel.items() if p == args.panel), None)
        if step and not args.screenshot:  # (the screenshot shows its panel itself, once the workspace loaded)
            window.scene.select(step)
            window.select_step(step)

    if args.workspace is not None:
        window.open_later(args.workspace, then=first_panel if args.panel else None)
    result = {"code": 0}
    if args.screenshot:
        from studio.screenshots import grab_when_loaded

        window.ASK_BEFORE_QUIT = False

        def grabbed(code: int) -> None:
            # a workspace asked for and not opened (the start page says why) is a failure; the start page asked for
            # (no workspace) is not
            result.update(code=1 if args.workspace and window.ctx is None else code)
            app.quit()

        grab_when_loaded(window, args.screenshot, args.panel, grabbed)

    closing = asyncio.Event()
    app.aboutToQuit.connect(closing.set)
    with loop:
        loop.run_until_complete(closing.wait())
    return result["code"]


def main() -> None:
    has_display = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.environ.get("QT_QPA_PLATFORM")
    if not has_display:
        if "--screenshot" not in sys.argv:
            print("cdl studio: no display (DISPLAY is not set); use --screenshot FILE to render offscreen, or "
                  "`cdl run` for the headless engine", file=sys.stderr)
            sys.exit(2)
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    sys.exit(run_studio())


if __name__ == "__main__":
    main()

"""`make run`: the studio where there is a display, the runtime's headless demo where there is none."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studio")
    parser.add_argument("--headless", action="store_true", help="run the headless demo, never the window")
    parser.add_argument("--workspace", type=Path, default=REPO / "demo-workspace")
    args, rest = parser.parse_known_args(argv)
    from runtime import demo

    if not args.headless:
        if not has_display():
            print("no display (DISPLAY is not set): running the headless demo instead of the studio\n")
        else:
            try:
                from studio.app.main import run_studio
            except ImportError as exc:
                print(f"the studio cannot start ({exc}): running the headless demo instead\n")
            else:
                if not (args.workspace / "cdl.yaml").exists():
                    demo.main(["--workspace", str(args.workspace), *rest])
                return run_studio([str(args.workspace)])
    return demo.main(["--workspace", str(args.workspace), *rest])


if __name__ == "__main__":
    sys.exit(main())

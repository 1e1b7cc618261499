"""The `cdl` command in a process of its own, for work that loads a framework or onnxruntime (which the studio's
process must not): its `--json` answer, or its one-line error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any


def cdl_json(root: Path, *args: str, timeout: float = 600, ok: tuple[int, ...] = (0,)) -> Any:  # noqa: ANN401
    """`cdl -w ROOT ARGS... --json` parsed. ok: exit codes whose output is the answer (`cdl doctor` exits 1 when a
    check fails, and still answers); any other raises RuntimeError with what the command said last."""
    r = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(root), *args, "--json"],
                       capture_output=True, text=True, timeout=timeout)
    if r.returncode in ok:
        try:
            return json.loads(r.stdout)
        except ValueError:
            pass
    said = (r.stderr or r.stdout).strip().splitlines()
    raise RuntimeError(said[-1].removeprefix("error: ") if said else f"cdl {args[0]} ended with exit status "
                       f"{r.returncode}")

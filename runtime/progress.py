"""Draws a job's events in a terminal: a progress bar per running step, a line per finished step."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from runtime.domain.events import Event, EventKind
from runtime.domain.text import number


class ProgressPrinter:
    def __init__(self, stream: TextIO | None = None, bars: bool | None = None, quiet: bool = False):
        self.stream = stream or sys.stderr
        self.bars = self.stream.isatty() if bars is None else bars
        self.quiet = quiet
        self._bar: Any = None

    def _write(self, line: str) -> None:
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def __call__(self, ev: Event) -> None:
        if ev.kind == EventKind.STARTED:
            self._close()
            if self.bars and not self.quiet:
                from tqdm import tqdm

                self._bar = tqdm(total=100, desc=f"{ev.step}", file=self.stream, leave=False,
                                 bar_format="{desc:<16} {bar:30} {percentage:3.0f}% {postfix}")
            else:
                self._write(f"… {ev.step}: started")
        elif ev.kind == EventKind.PROGRESS:
            if self._bar is not None and ev.fraction is not None:
                self._bar.n = int(ev.fraction * 100)
                self._bar.set_postfix_str(ev.message[:50], refresh=True)
        elif ev.kind == EventKind.LOG:
            self._write(f"  {ev.step}: {ev.message}" if ev.step else f"  {ev.message}")
        elif ev.kind == EventKind.METRIC:
            keys = [k for k in ("trial", "epoch", "train_loss", "val_loss", "val_accuracy") if k in ev.data]
            keys = keys or list(ev.data)
            vals = " ".join(f"{k} {number(ev.data[k])}" for k in keys)
            self._write(f"  {ev.step}: {vals}")
        elif ev.kind == EventKind.FINISHED:
            self._close()
            dur = ev.data.get("duration", 0.0)
            mark = "!" if ev.data.get("status") == "drifted" else "✓"
            self._write(f"{mark} {ev.step}: {ev.message} ({dur:.1f}s)")
        elif ev.kind == EventKind.SKIPPED:
            self._write(f"= {ev.step}: up to date")
        elif ev.kind == EventKind.FAILED:
            self._close()
            self._write(f"{'⏸' if (ev.data or {}).get('waiting') else '✗'} {ev.step}: {ev.message}")  # a review: no failure
            tb = (ev.data or {}).get("traceback")
            if tb:  # a bug's, or the workspace's own code's: the line of src/ it names is in it
                self._write("\n".join(f"    {line}" for line in str(tb).rstrip().splitlines()))

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

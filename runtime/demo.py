"""The headless demo (`make run` without a display): a workspace from the real BBC archive and the pipeline
run through, printing what each step did. Safe to run again: steps that are up to date are skipped."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BBC = REPO.parent / "shared" / "datasets" / "bbc" / "bbc-fulltext.zip"


def headless(workspace: Path, source: Path, until: str) -> int:
    from runtime.api import add_source
    from runtime.domain.errors import CdlError
    from runtime.jobs import Runner
    from runtime.progress import ProgressPrinter
    from runtime.workspace import Workspace

    if not source.exists():
        print(f"error: {source} not found: the demo needs ../shared/datasets beside the repository", file=sys.stderr)
        return 2
    try:
        if (workspace / "cdl.yaml").exists():
            ws = Workspace(workspace)
            print(f"using workspace {ws.root}")
        else:
            ws = Workspace.init(workspace, "text-classification", "bbc-news-demo")
            print(f"created workspace {ws.root} (git + DVC + cdl.yaml + .cdl/registry.db)")
        printer = ProgressPrinter(sys.stdout)
        if not ws.config().params("data.import")["sources"]:
            add_source(ws, source, subscriber=printer)
        steps = ws.config().order()
        target = until if until in steps else steps[-1]
        runner = Runner(ws)
        runner.bus.subscribe(printer)
        result = runner.run(until=target)
    except CdlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print()
    for o in result.steps:
        line = f"  {o.step:<16} {o.status:<8} {o.message}"
        print(line)
    print(f"\nworkspace: {ws.root}  (try: .venv/bin/cdl -w {ws.root} status)")
    return 0 if result.ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtime.demo", description="the headless demo")
    parser.add_argument("--workspace", type=Path, default=REPO / "demo-workspace")
    parser.add_argument("--source", type=Path, default=DEFAULT_BBC)
    parser.add_argument("--until", default="data.label")
    args = parser.parse_args(argv)
    return headless(args.workspace, args.source, args.until)


if __name__ == "__main__":
    sys.exit(main())

"""The headless demo (`make run` without a display): a workspace from the real BBC archive carried through its whole
life, printing what each step did: the data pipeline, the model pipeline (tuned with ASHA, trained, registered,
evaluated, approved automatically: the demo's cdl.yaml says so), compression, signed bundles, then an edge agent
started on 127.0.0.1, the champion pushed to it by deploy.push, the test split's texts scored on it over the Open
Inference Protocol, and deploy.monitor collecting every prediction back and checking them for drift. It stopped at
data.label, so `make run` showed a sixth of the product. Safe to run again: steps that are up to date are skipped,
and the device the demo enrolled is started again."""

from __future__ import annotations

import argparse
import json
import random
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from runtime.domain.processes import stop_child

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BBC = REPO.parent / "shared" / "datasets" / "bbc" / "bbc-fulltext.zip"
DEMO_NAME = "bbc-news-demo"
DEVICE = "demo-edge"
SCORED = 300  # test texts sent to the demo's device, in a random order


def headless(workspace: Path, source: Path, until: str) -> int:
    from runtime.api import add_source
    from runtime.domain.errors import CdlError
    from runtime.jobs import Runner
    from runtime.progress import ProgressPrinter
    from runtime.workspace import Workspace

    if not source.exists():
        print(f"error: {source} not found: the demo needs ../shared/datasets beside the repository", file=sys.stderr)
        return 2
    agent: subprocess.Popen | None = None
    try:
        if (workspace / "cdl.yaml").exists():
            ws = Workspace(workspace)
            print(f"using workspace {ws.root}")
        else:
            ws = Workspace.init(workspace, "text-classification", DEMO_NAME)
            print(f"created workspace {ws.root} (git + DVC + cdl.yaml + .cdl/registry.db)")
        cfg = ws.config()
        if cfg.name == DEMO_NAME and not cfg.params("model.review")["auto_approve_if_better"]:
            # nobody is there to review: the demo's own workspace approves a candidate that beats the champion
            # (recorded as automatic); a person reviews in a workspace of their own
            cfg.set_param("model.review", "auto_approve_if_better", True)
            cfg.save()
            print("this demo workspace's cdl.yaml sets model.review.auto_approve_if_better: a candidate that beats "
                  "the champion is approved automatically (recorded as cdl-auto); elsewhere a person reviews it "
                  "(`cdl models review`, the studio's review panel)")
        printer = ProgressPrinter(sys.stdout)
        if not ws.config().params("data.import")["sources"]:
            add_source(ws, source, subscriber=printer)
        steps = ws.config().order()
        target = until if until in steps else steps[-1]
        edge = steps.index(target) >= steps.index("deploy.push")
        runner = Runner(ws)
        runner.bus.subscribe(printer)
        result = runner.run(until="deploy.package" if edge else target)
        outcomes = list(result.steps)
        if edge and result.ok:
            agent, folder = _start_device(ws)
            push = runner.run(until="deploy.push")
            outcomes += [o for o in push.steps if o.step == "deploy.push"]
            result = push
            if push.ok:
                print(f"\n{_score_test_texts(ws)}\n")
                # run, not skipped as checked a minute ago: these predictions are what the checks are for
                after = steps[steps.index("deploy.push") + 1:steps.index(target) + 1]
                if after:
                    result = runner.run(steps=after)
                    outcomes += list(result.steps)
    except CdlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if agent is not None:
            stop_child(agent)
    print()
    for o in outcomes:
        print(f"  {o.step:<16} {o.status:<8} {o.message}")
    print(f"\nworkspace: {ws.root}  (try: .venv/bin/cdl -w {ws.root} status, or .venv/bin/cdl studio {ws.root})")
    if agent is not None:
        print(f"device {DEVICE}: its folder is {folder}; the demo stopped its agent: `.venv/bin/cdl-edge serve "
              f"--data-dir {folder}` starts it again (`cdl -w {ws.root} devices status` then finds it)")
    if result.waiting_at:
        print(f"the run waits at {result.waiting_at} for a person: `cdl -w {ws.root} status` says what for")
    return 0 if result.ok else 1


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_device(ws: Any) -> tuple[subprocess.Popen, Path]:  # noqa: ANN401 - the Workspace
    """The demo's edge device: enrolled once, in a folder beside the workspace (`<workspace>-edge`), and its agent
    (`cdl-edge serve`, the real one) started on a free port of 127.0.0.1 for this run."""
    from edge_agent.proto.address import listen_for
    from runtime.devices import DeviceError, enroll, wait_ready
    from runtime.workspace.config import atomic_write_bytes

    folder = ws.root.parent / f"{ws.root.name}-edge"
    known = {d.name: d for d in ws.store.devices()}
    if DEVICE not in known or not (folder / "agent.json").is_file():
        if folder.exists() and DEVICE not in known:
            # an earlier demo workspace's device (that workspace deleted, this one new): its folder is kept, aside
            aside = folder.with_name(f"{folder.name}.before-{time.strftime('%Y%m%d-%H%M%S')}")
            folder.rename(aside)
            print(f"{folder} belonged to an earlier demo workspace's device: moved aside to {aside}")
        address = f"127.0.0.1:{_free_port()}"
        enroll(ws, DEVICE, address, folder, replace=DEVICE in known)
        print(f"enrolled device {DEVICE} at {address}; its folder: {folder}")
    else:
        # the port it was enrolled at, where agent.json's `listen` and the workspace agree, so that `cdl-edge serve
        # --data-dir` alone starts it where the workspace looks; taken since by something else, another free one,
        # written to both
        address = known[DEVICE].address
        if not _port_free(int(address.rsplit(":", 1)[1])):
            address = f"127.0.0.1:{_free_port()}"
            agent_cfg = json.loads((folder / "agent.json").read_text())
            agent_cfg["listen"] = listen_for(address)  # as enroll writes it
            atomic_write_bytes(folder / "agent.json", json.dumps(agent_cfg, indent=1).encode())
            ws.store.update_device(DEVICE, address=address)
            print(f"{DEVICE}'s port was taken: it listens on {address} now (agent.json and the workspace say so)")
    # its output goes to a file (a pipe nobody reads would stall it once full); the first line says where it listens
    log_path = folder / "demo-agent.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "edge_agent.cli", "serve", "--data-dir", str(folder),
                                 "--listen", address], stdout=log, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    line = ""
    while time.time() < deadline and proc.poll() is None:
        line = next((ln for ln in log_path.read_text(errors="replace").splitlines() if "listening on" in ln), "")
        if line:
            break
        time.sleep(0.1)
    if not line:
        stop_child(proc)
        said = log_path.read_text(errors="replace").strip()[-1500:]
        raise DeviceError(f"the demo's agent did not start ({log_path}): {said or 'it said nothing'}")
    print(f"started the edge agent of {DEVICE}: {line.strip()}")
    try:
        wait_ready(ws, DEVICE)
    except BaseException:
        stop_child(proc)
        raise
    return proc, folder


def _score_test_texts(ws: Any) -> str:  # noqa: ANN401 - the Workspace
    """The test split's texts sent to the device over the Open Inference Protocol, as any client would send them
    (runtime.serve.predict), in batches; what it answered against their labels."""
    from runtime.serve import predict
    from runtime.workspace.dataset import decode_text

    view = ws.dataset()
    rows = [r for r in view.rows if r.split == "test" and r.label]
    random.Random(0).shuffle(rows)  # the index is in class order: the first ones alone would be one class, a drift
    rows = rows[:SCORED]
    texts = [decode_text(view.read_bytes(r))[0] for r in rows]
    address = next(d.address for d in ws.store.devices() if d.name == DEVICE)
    model = ws.config().name
    answers: list[dict[str, Any]] = []
    for i in range(0, len(texts), 25):
        answers += predict(ws, address, model, texts[i:i + 25])
    right = sum(a["label"] == r.label for a, r in zip(answers, rows, strict=True))
    first = texts[0].strip().split("\n", 1)[0][:70] if texts else ""
    example = f'; e.g. "{first}" → {answers[0]["label"]} ({answers[0]["confidence"]:.2f})' if answers else ""
    return (f"{DEVICE} scored {len(answers)} test texts over the Open Inference Protocol: {right} of them as "
            f"labeled{example}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtime.demo", description="the headless demo")
    parser.add_argument("--workspace", type=Path, default=REPO / "demo-workspace")
    parser.add_argument("--source", type=Path, default=DEFAULT_BBC)
    parser.add_argument("--until", default="deploy.maintain", help="the last step to run (default: every step)")
    args = parser.parse_args(argv)
    return headless(args.workspace.resolve(), args.source, args.until)


if __name__ == "__main__":
    sys.exit(main())

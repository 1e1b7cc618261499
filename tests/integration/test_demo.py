"""`make run` without a display: the headless demo carries a BBC workspace through its whole life (it stopped at
data.label), with a real edge agent on 127.0.0.1 that scores the test split and a deploy.monitor that collects
every prediction back. Run here on a small real BBC subset with the demo's own settings."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys

from runtime.workspace import Workspace
from tests.conftest import make_bbc_subset


def _demo(ws_root, source) -> subprocess.CompletedProcess:  # noqa: ANN001
    return subprocess.run([sys.executable, "-m", "studio", "--headless", "--workspace", str(ws_root), "--source",
                           str(source)], capture_output=True, text=True, timeout=900)


def _closed(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_the_headless_demo_runs_the_whole_life_and_again(tmp_path):
    source = make_bbc_subset(tmp_path / "bbc.zip", per_class=20)
    root = tmp_path / "demo-workspace"
    r = _demo(root, source)
    assert r.returncode == 0, (r.stdout[-4000:], r.stderr[-3000:])
    out = r.stdout
    assert "model.review.auto_approve_if_better" in out
    assert "✓ model.review: bbc-news-demo:1 approved by cdl-auto: champion" in out, out[-4000:]
    assert "✓ deploy.push: bbc-news-demo:1:fp32 on 1 device(s)" in out, out[-4000:]
    said = re.search(r"demo-edge scored (\d+) test texts over the Open Inference Protocol: (\d+) of them as labeled",
                     out)
    assert said, out[-4000:]
    ws = Workspace(root)
    tests = sum(1 for row in ws.dataset().rows if row.split == "test")
    scored, right = int(said.group(1)), int(said.group(2))
    assert scored == min(tests, 300) and scored > 0 and right > scored * 0.5, said.group(0)
    # every step ran: the summary lists them all, none failed
    table = dict(re.findall(r"^  ([a-z]+\.[a-z]+)\s+(\w+)\s", out, re.M))
    assert list(table) == ws.config().order(), table
    assert set(table.values()) <= {"done", "skipped", "drifted"}, table
    # the predictions came back: deploy.monitor collected each one from the device's journal
    check = json.loads(subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(root), "monitor", "--json"],
                                      capture_output=True, text=True, timeout=300, check=True).stdout)["checks"][0]
    assert check["device"] == "demo-edge" and check["window"]["n"] == scored, check
    reviews = ws.store.reviews("bbc-news-demo", 1)
    assert [(v.reviewer, v.automatic, v.decision) for v in reviews] == [("cdl-auto", True, "approved")]
    # the agent it started is stopped: nothing is left listening
    port = int(re.search(r"listening on 127\.0\.0\.1:(\d+)", out).group(1))
    assert _closed(port)
    assert (tmp_path / "demo-workspace-edge" / "agent.json").is_file()
    ws.close()

    # again: nothing is trained again; the same device is started, scores, and the checks run on what it sent; its
    # port taken meanwhile by something else, it gets another, which agent.json and the workspace both say
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        again = _demo(root, source)
    assert again.returncode == 0, (again.stdout[-4000:], again.stderr[-3000:])
    assert again.stdout.startswith("using workspace") and "enrolled device" not in again.stdout
    assert "demo-edge's port was taken: it listens on 127.0.0.1:" in again.stdout, again.stdout[:2000]
    for step in ("model.tune", "model.train", "deploy.package", "deploy.push"):
        assert f"= {step}: up to date" in again.stdout, step
    assert "… deploy.monitor: started" in again.stdout
    assert f"demo-edge: {scored} new scoring record(s), up to seq {2 * scored}" in again.stdout, again.stdout[-3000:]
    port = int(re.search(r"listening on 127\.0\.0\.1:(\d+)", again.stdout).group(1))
    assert _closed(port)
    # what the demo says at the end starts the agent where the workspace looks for it: `cdl-edge serve --data-dir`
    assert f"`.venv/bin/cdl-edge serve --data-dir {tmp_path / 'demo-workspace-edge'}` starts it again" in again.stdout
    agent = subprocess.Popen([sys.executable, "-m", "edge_agent.cli", "serve", "--data-dir",
                              str(tmp_path / "demo-workspace-edge")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        assert f"listening on 127.0.0.1:{port}" in agent.stdout.readline()
        status = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(root), "devices", "status", "--json"],
                                capture_output=True, text=True, timeout=120)
        assert status.returncode == 0, status.stderr
        device = json.loads(status.stdout)["devices"][0]
        assert device["device"] == "demo-edge" and device["online"], device
        assert device["active"]["name"] == "bbc-news-demo", device
    finally:
        agent.terminate()
        agent.wait(15)

    # the workspace deleted to start afresh, its device's folder left behind: that folder is moved aside, not
    # refused ("already holds an enrolled agent", exit 2) nor overwritten
    import shutil

    shutil.rmtree(root)
    fresh = _demo(root, source)
    assert fresh.returncode == 0, (fresh.stdout[-3000:], fresh.stderr[-3000:])
    assert "belonged to an earlier demo workspace's device: moved aside to" in fresh.stdout
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("demo-workspace-edge.before-")]
    assert len(kept) == 1 and (kept[0] / "journal.db").is_file(), kept
    assert "enrolled device demo-edge at 127.0.0.1:" in fresh.stdout and "✓ deploy.push" in fresh.stdout

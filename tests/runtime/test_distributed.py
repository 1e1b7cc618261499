"""model.train under torchrun: DDP with two CPU processes on the gloo backend, on the full BBC data."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.domain.errors import ConfigError
from runtime.jobs import Runner
from runtime.ml.distributed import DistributedSettings, settings, torchrun_command

TRAIN = {"use_tuned": False, "epochs": 4, "patience": 0, "seed": 11}


def _train_and_evaluate(ws) -> dict:  # noqa: ANN001
    res = Runner(ws).run(steps=["model.train", "model.register", "model.evaluate"],
                         overrides={"model.train": TRAIN, "model.evaluate": {"threshold": 0.5}})
    assert res.ok, [o.error for o in res.steps]
    return {o.step: o.summary for o in res.steps}


def test_ddp_with_two_gloo_processes_matches_one_process(bbc_ws):
    ws = bbc_ws
    assert Runner(ws).run(until="model.preprocess").ok
    single = _train_and_evaluate(ws)
    cfg = ws.config()
    cfg.extra["training"] = {"distributed": {"nproc_per_node": 2, "backend": "gloo"}}
    cfg.save()
    ddp = _train_and_evaluate(ws)
    assert "x2 (DDP, gloo)" in ddp["model.train"]["device"]
    assert "DDP" not in single["model.train"]["device"]
    assert ddp["model.train"]["epochs"] == 4
    acc1 = single["model.evaluate"]["metrics"]["test_accuracy"]
    acc2 = ddp["model.evaluate"]["metrics"]["test_accuracy"]
    print(f"test accuracy: one process {acc1:.4f}, DDP x2 {acc2:.4f}")
    assert acc2 >= 0.9 and abs(acc1 - acc2) <= 0.03, (acc1, acc2)
    # the per-epoch metrics of rank 0 reached the registry, and nothing was left behind
    exp = ws.store.experiment(ddp["model.train"]["experiment_id"])
    trial = ws.store.trials(exp.id)[0]
    assert len([m for m in ws.store.metrics(trial.id)]) == 4
    assert not list((ws.root / ".cdl" / "tmp").glob("ddp-*"))


def test_distributed_settings_are_checked():
    assert not settings({}).enabled
    s = settings({"training": {"distributed": {"nproc_per_node": 2}}})
    assert s == DistributedSettings(nproc_per_node=2) and s.world_size == 2
    with pytest.raises(ConfigError, match=r"training.distributed.nproc_per_node: expected a positive integer"):
        settings({"training": {"distributed": {"nproc_per_node": 0}}})
    with pytest.raises(ConfigError, match=r"training.distributed.backend: expected gloo or nccl"):
        settings({"training": {"distributed": {"backend": "mpi"}}})
    with pytest.raises(ConfigError, match=r"training.distributed.gpus: unknown setting"):
        settings({"training": {"distributed": {"gpus": 2}}})
    cmd = torchrun_command(DistributedSettings(nproc_per_node=2, nnodes=2, rdzv_endpoint="10.0.0.1:29500"),
                           "spec.json", node_rank=1)
    assert "--nnodes=2" in cmd and "--node_rank=1" in cmd and "--rdzv_endpoint=10.0.0.1:29500" in cmd


def test_keras_cannot_run_distributed(small_bbc):
    cfg = small_bbc.config()
    cfg.extra["training"] = {"distributed": {"nproc_per_node": 2}}
    cfg.save()
    assert Runner(small_bbc).run(until="model.preprocess").ok
    res = Runner(small_bbc).run(steps=["model.train"], overrides={"model.train": {"framework": "keras",
                                                                                  "use_tuned": False}})
    assert not res.ok and "torch framework only" in res.steps[0].error


def _ddp_processes(root) -> list[int]:  # noqa: ANN001
    from pathlib import Path

    pids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "runtime.ml.distributed" in cmd and str(root) in cmd:
            pids.append(int(p.name))
    return pids


def test_killing_the_step_takes_torchrun_and_its_ranks_with_it(small_bbc):
    import os
    import signal
    import subprocess
    import sys
    import time

    ws = small_bbc
    assert Runner(ws).run(until="model.preprocess").ok
    cfg = ws.config()
    cfg.extra["training"] = {"distributed": {"nproc_per_node": 2, "backend": "gloo"}}
    cfg.save()
    step = subprocess.Popen([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "run", "model.train",
                             "--set", "model.train.epochs=5000", "--set", "model.train.patience=0",
                             "--set", "model.train.use_tuned=false"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while len(_ddp_processes(ws.root)) < 3 and time.time() < deadline:  # torchrun and two ranks
            time.sleep(0.2)
        assert len(_ddp_processes(ws.root)) >= 3, "torchrun and its ranks never started"
        time.sleep(2)
        os.kill(step.pid, signal.SIGKILL)
        step.wait(timeout=10)
        deadline = time.time() + 60
        while _ddp_processes(ws.root) and time.time() < deadline:
            time.sleep(0.2)
        left = _ddp_processes(ws.root)
    finally:
        for pid in _ddp_processes(ws.root):
            os.kill(pid, signal.SIGKILL)
    assert left == [], f"orphaned training processes: {left}"
    # the killed step's run folder and checkpoint file stay behind until the next run on this host
    import json
    import socket

    tmp = ws.root / ".cdl" / "tmp"
    (stale,) = tmp.glob("ddp-*")
    checkpoint = Path(json.loads((stale / "owner.json").read_text())["checkpoint"])
    assert checkpoint.exists()
    for name, owner in (("ddp-live", {"host": socket.gethostname(), "pid": os.getpid()}),
                        ("ddp-other-host", {"host": "another-host", "pid": 1})):
        (tmp / name).mkdir()
        (tmp / name / "owner.json").write_text(json.dumps(owner))
    (tmp / "ddp-no-owner-yet").mkdir()
    assert Runner(ws).run(until="model.preprocess").ok
    assert sorted(p.name for p in tmp.glob("ddp-*")) == ["ddp-live", "ddp-no-owner-yet", "ddp-other-host"]
    assert not checkpoint.exists()
    exp = [e for e in ws.store.experiments() if e.step == "model.train"][-1]
    assert exp.status == "failed"  # the killed step's experiment is closed too


def test_a_failing_rank_is_reported_and_torchrun_leaves_nothing_behind(tmp_path):
    """The ranks fail (their prepared data is not there): the error carries torchrun's log, not the path of a log
    that the run's cleanup has removed, and torchrun leaves no torchelastic_* folder in the system's temp folder."""
    import tempfile

    import numpy as np

    from runtime.ml import distributed
    from runtime.ml.common import TrainConfig

    temp = Path(tempfile.gettempdir())
    before = set(temp.glob("torchelastic_*"))
    s = DistributedSettings(nproc_per_node=2, backend="gloo")
    with pytest.raises(RuntimeError) as err:
        distributed.launch(s, tmp_path / "tmp", tmp_path / "no-such-prepared-data", "k", np.arange(8), np.arange(8, 10),
                           TrainConfig(template="text_mlp", epochs=1), lambda e, m: None, lambda: False, lambda m: None)
    msg = str(err.value)
    assert "distributed training failed (torchrun exit 1)" in msg
    assert "no-such-prepared-data" in msg, msg  # the rank's own error, from the log
    assert "torchrun.log" not in msg  # the run's folder is gone: naming a file in it would send the user nowhere
    assert not list((tmp_path / "tmp").glob("ddp-*"))
    assert set(temp.glob("torchelastic_*")) == before


def test_two_nodes_meet_at_the_rendezvous_and_train_as_one(small_bbc):
    """nnodes 2: model.train starts node 0 and logs the command for the other machine; that command, run as a
    second "machine" on this host (c10d's store then falls back to a client on the second node), joins the
    rendezvous, and the two train as one world of 2. The multi-node path (c10d rendezvous, the logged command) had
    never run: only --standalone had."""
    import shlex
    import socket
    import subprocess
    import sys
    import threading

    ws = small_bbc
    assert Runner(ws).run(until="model.preprocess").ok
    # the rendezvous port both nodes must know in advance, so it cannot be port 0: a free one, taken just before
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = ws.config()
    cfg.extra["training"] = {"distributed": {"nproc_per_node": 1, "nnodes": 2, "backend": "gloo",
                                             "rdzv_endpoint": f"127.0.0.1:{port}"}}
    cfg.save()
    report = ws.root.parent / "node0.json"
    node0 = subprocess.Popen([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "run", "model.train", "--set",
                              "model.train.use_tuned=false", "--set", "model.train.epochs=2", "--json"],
                             stdout=report.open("w"), stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    found = threading.Event()
    node1: list[subprocess.Popen] = []

    def read_log() -> None:
        for line in node0.stderr:
            lines.append(line)
            if "(node_rank 1..1): " in line and not found.is_set():
                argv = shlex.split(line.split("(node_rank 1..1): ", 1)[1])
                assert argv[0] == "python" and "--node_rank=1" in argv and f"--rdzv_endpoint=127.0.0.1:{port}" in argv
                node1.append(subprocess.Popen([sys.executable, *argv[1:]], stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL))
                found.set()

    reader = threading.Thread(target=read_log, daemon=True)
    reader.start()
    try:
        assert found.wait(120), "".join(lines)
        node0.wait(300)
        reader.join(10)
        assert node1[0].wait(120) == 0
    finally:
        for p in (node0, *node1):
            if p.poll() is None:
                p.kill()
    assert node0.returncode == 0, "".join(lines)[-3000:]
    # the text template refits: on node 0 alone, so that the other machine's one command was all it had to run (a
    # second rendezvous waited for a second command there, and the step hung)
    assert any("on this machine alone (1 process(es))" in ln for ln in lines), "".join(lines)[-3000:]
    assert sum("(node_rank 1..1): " in ln for ln in lines) == 1
    import json

    doc = json.loads(report.read_text())
    (train,) = [s for s in doc["steps"] if s["id"] == "model.train"]
    assert train["status"] == "done", train
    summary = ws.store.last_step_run("model.train").summary
    assert "x2 (DDP, gloo)" in summary["device"] and summary["epochs"] == 2, summary
    assert not list((ws.root / ".cdl" / "tmp").glob("ddp-*"))

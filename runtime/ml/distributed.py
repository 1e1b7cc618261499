"""Distributed data-parallel training (PyTorch DDP under torchrun), configured in cdl.yaml:

    training:
      distributed:
        nproc_per_node: 2        # training processes on this machine
        nnodes: 1                # machines (more than one: run the printed command on each other machine)
        backend: gloo            # gloo (CPU) or nccl (CUDA)
        rdzv_endpoint: 127.0.0.1:29500   # where the machines meet (nnodes > 1)

model.train writes a spec (tensors folder, index files, configuration) into the workspace, starts `torchrun`
on this machine as node 0, and follows rank 0's per-epoch metrics file for progress, metrics and cancel (a
cancel terminates torchrun's process group). Every rank trains on its share of each global mini-batch
(batch_size is the global batch), DDP averages the gradients, and rank 0 writes the checkpoint in the same
format as a single-process run. Only the torch framework runs distributed.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.domain.errors import ConfigError
from runtime.domain.processes import die_with_parent

BACKENDS = ("gloo", "nccl")
OWNER = "owner.json"  # in a run folder: the host and pid of the process that made it


@dataclass(frozen=True)
class DistributedSettings:
    nproc_per_node: int = 1
    nnodes: int = 1
    backend: str = "gloo"
    rdzv_endpoint: str = "127.0.0.1:29500"

    @property
    def enabled(self) -> bool:
        return self.nproc_per_node * self.nnodes > 1

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes


def settings(extra: dict[str, Any], where: str = "cdl.yaml") -> DistributedSettings:
    """Parse `training.distributed` from the config's extra keys; errors name the field."""
    training = extra.get("training") or {}
    if not isinstance(training, dict):
        raise ConfigError(f"{where}: training: expected a mapping")
    raw = training.get("distributed")
    if raw in (None, False):
        return DistributedSettings()
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: training.distributed: expected a mapping (nproc_per_node, nnodes, backend, "
                          "rdzv_endpoint)")
    unknown = set(raw) - {"nproc_per_node", "nnodes", "backend", "rdzv_endpoint"}
    if unknown:
        raise ConfigError(f"{where}: training.distributed.{sorted(unknown)[0]}: unknown setting (known: "
                          "nproc_per_node, nnodes, backend, rdzv_endpoint)")
    out = {}
    for key in ("nproc_per_node", "nnodes"):
        if key in raw:
            v = raw[key]
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{where}: training.distributed.{key}: expected a positive integer, got {v!r}")
            out[key] = v
    if "backend" in raw:
        if raw["backend"] not in BACKENDS:
            raise ConfigError(f"{where}: training.distributed.backend: expected gloo or nccl, got {raw['backend']!r}")
        out["backend"] = raw["backend"]
    if "rdzv_endpoint" in raw:
        ep = str(raw["rdzv_endpoint"])
        host, _, port = ep.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"{where}: training.distributed.rdzv_endpoint: expected HOST:PORT, got {ep!r}")
        out["rdzv_endpoint"] = ep
    return DistributedSettings(**out)


def torchrun_command(s: DistributedSettings, spec: Path, node_rank: int = 0, run_id: str = "cdl") -> list[str]:
    # torchrun's own files (its error records) go into the run's folder, removed with it: left to itself,
    # torchrun makes a torchelastic_* folder in the system's temporary folder on every run and never removes it
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={s.nproc_per_node}",
           f"--log-dir={Path(spec).parent / 'torchrun'}"]
    if s.nnodes == 1:
        cmd += ["--standalone"]
    else:
        cmd += [f"--nnodes={s.nnodes}", f"--node_rank={node_rank}", "--rdzv_backend=c10d",
                f"--rdzv_endpoint={s.rdzv_endpoint}", f"--rdzv_id={run_id}"]
    return [*cmd, "-m", "runtime.ml.distributed", str(spec)]


def launch(s: DistributedSettings, tmp_root: Path, prepared_dir: Path, key: str, train_idx: Any, val_idx: Any,
           cfg: Any, on_epoch: Callable[[int, dict[str, float]], None], cancelled: Callable[[], bool],
           log: Callable[[str], None]):  # noqa: ANN201
    """Run DDP training; returns a TrainResult like torch_backend.train. The run's files (spec, index files,
    metrics, torchrun's log) live in a folder under `tmp_root` (shared with the other machines when nnodes > 1),
    removed when the run ends."""
    import shutil
    import uuid

    sweep_stale(Path(tmp_root))
    workdir = Path(tmp_root) / f"ddp-{uuid.uuid4().hex[:10]}"
    workdir.mkdir(parents=True)
    try:
        return _launch(s, workdir, prepared_dir, key, train_idx, val_idx, cfg, on_epoch, cancelled, log)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def sweep_stale(tmp_root: Path) -> list[Path]:
    """Remove the run folders, and their checkpoint files, that a process of this host left when it was killed
    (its `finally` never ran). Folders of live processes, of other hosts (a shared folder) and without an owner
    file (being made) are left alone."""
    import shutil

    from runtime.domain.processes import pid_alive

    here, removed = socket.gethostname(), []
    for d in sorted(Path(tmp_root).glob("ddp-*")):
        try:
            owner = json.loads((d / OWNER).read_text())
        except (OSError, ValueError):
            continue
        if owner.get("host") != here or pid_alive(owner.get("pid")):
            continue
        if owner.get("checkpoint"):
            Path(owner["checkpoint"]).unlink(missing_ok=True)
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed


def _launch(s: DistributedSettings, workdir: Path, prepared_dir: Path, key: str, train_idx: Any, val_idx: Any,
            cfg: Any, on_epoch: Callable[[int, dict[str, float]], None], cancelled: Callable[[], bool],
            log: Callable[[str], None]):  # noqa: ANN202
    import dataclasses

    import numpy as np

    from runtime.ml.common import StopTraining, TrainResult

    np.save(workdir / "train_idx.npy", np.asarray(train_idx))
    np.save(workdir / "val_idx.npy", np.asarray(val_idx))
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}
    fd, checkpoint = tempfile.mkstemp(suffix=".pt", prefix="cdl-ckpt-")
    os.close(fd)
    # whose folder this is: a later run on this host removes it (and the checkpoint) if this process was killed
    (workdir / OWNER).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                             "checkpoint": checkpoint}))
    spec = {"prepared": str(prepared_dir), "key": key, "config": config, "backend": s.backend,
            "metrics": str(workdir / "metrics.jsonl"), "result": str(workdir / "result.json"),
            "checkpoint": checkpoint}
    spec_path = workdir / "spec.json"
    spec_path.write_text(json.dumps(spec))
    (workdir / "metrics.jsonl").write_text("")
    cmd = torchrun_command(s, spec_path, run_id=workdir.name)
    if s.nnodes > 1:
        other = torchrun_command(s, spec_path, node_rank=1, run_id=workdir.name)
        log("distributed training waits for the other machines; on each, with this workspace at the same path, "
            "run (node_rank 1.." + str(s.nnodes - 1) + "): " + shlex.join(other).replace(sys.executable, "python"))
    log(f"torchrun: {s.world_size} processes ({s.nproc_per_node} per node, {s.nnodes} node(s), {s.backend})")
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // s.nproc_per_node))}
    errlog = open(workdir / "torchrun.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=errlog, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                            preexec_fn=die_with_parent)
    seen = 0
    try:
        while True:
            done = proc.poll() is not None
            with open(workdir / "metrics.jsonl") as fh:
                lines = fh.read().splitlines()
            for line in lines[seen:]:
                if line.strip():
                    m = json.loads(line)
                    epoch = int(m.pop("epoch"))
                    on_epoch(epoch, m)  # may raise StopTraining (cancel)
            seen = len(lines)
            if cancelled():
                raise StopTraining("cancelled")
            if done:
                break
            time.sleep(0.25)
    except BaseException:
        _stop(proc)
        Path(checkpoint).unlink(missing_ok=True)
        raise
    finally:
        errlog.close()
    if proc.returncode != 0:
        Path(checkpoint).unlink(missing_ok=True)
        # the run's folder, and the log in it, are removed when this returns: the message carries what it said
        tail = (workdir / "torchrun.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"distributed training failed (torchrun exit {proc.returncode}); torchrun's log "
                           f"ends:\n{tail}")
    res = json.loads((workdir / "result.json").read_text())
    return TrainResult("torch", cfg.template, res["history"], res["best_epoch"], Path(spec["checkpoint"]),
                       res["arch"], res["device"], res["seconds"], res["stopped_early"])


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


# -- inside each torchrun process ---------------------------------------------------------------------------


def _worker(spec_path: str) -> None:
    import numpy as np
    import torch.distributed as dist

    from runtime.ml import torch_backend
    from runtime.ml.common import TrainConfig
    from runtime.ml.preprocess import _load

    die_with_parent()  # torchrun starts ranks in sessions of their own
    spec = json.loads(Path(spec_path).read_text())
    dist.init_process_group(backend=spec["backend"])
    rank = dist.get_rank()
    try:
        prep = _load(Path(spec["prepared"]), spec["key"], cached=True)
        workdir = Path(spec_path).parent
        tr = np.load(workdir / "train_idx.npy")
        va = np.load(workdir / "val_idx.npy")
        c = dict(spec["config"])
        c["workspace"] = Path(c["workspace"]) if c.get("workspace") else None
        cfg = TrainConfig(**c)

        def on_epoch(epoch: int, m: dict[str, float]) -> None:
            with open(spec["metrics"], "a") as fh:
                fh.write(json.dumps({"epoch": epoch, **m}) + "\n")

        result = torch_backend.train(prep.X_train, prep.y_train, tr, va, prep.classes, cfg,
                                     on_epoch if rank == 0 else None)
        if rank == 0:
            os.replace(result.checkpoint, spec["checkpoint"])
            out = {"history": result.history, "best_epoch": result.best_epoch, "arch": result.arch,
                   "device": f"{result.device} x{dist.get_world_size()} (DDP, {spec['backend']})",
                   "seconds": result.seconds, "stopped_early": result.stopped_early}
            tmp = Path(spec["result"] + ".tmp")
            tmp.write_text(json.dumps(out))
            os.replace(tmp, spec["result"])
        else:
            result.checkpoint.unlink(missing_ok=True)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    _worker(sys.argv[1])

"""Several agent processes on one port (agent.json `workers`, or `cdl-edge serve --workers N`).

Python runs one thread of Python at a time, so one agent process serves at most what one core can do. With
`workers: N` the agent started by the user (worker 0, the supervisor) starts N-1 more processes of itself; each
runs the whole gRPC server on the same port (SO_REUSEPORT: the kernel hands each new connection to one of them).
They share everything through the data folder, as they would after a restart:

- the active model: active.json, replaced with one rename under a lock file. Before it answers, a worker checks
  that file (one stat) and loads the model it names when it changed, so after an Activate or a Rollback returns,
  every request that follows, on any worker, runs the new model;
- the scoring journal: one SQLite file in WAL mode; each commit takes SQLite's write lock, so sequence numbers
  follow commit order across processes. StreamScoring is woken by its own worker's commits and polls for the
  others' (every 0.25 s);
- request and error counters: a small memory-mapped file, one slot per worker, summed by Health, after the time
  worker 0 started (Health's uptime is the agent's, whichever worker answers).

Workers die with the supervisor (PR_SET_PDEATHSIG, so also when it is SIGKILLed), and a worker that dies is
started again.
"""

from __future__ import annotations

import asyncio
import bisect
import ctypes
import logging
import mmap
import os
import signal
import struct
import sys
import time
from pathlib import Path

log = logging.getLogger("cdl-edge")
_HEAD = struct.Struct("<d")  # when worker 0 started (Unix time): the agent's uptime, whichever worker answers
# ModelInfer durations, in the buckets of a Prometheus histogram (upper bounds, seconds; the last is +Inf)
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, float("inf"))
_SUM = 4 + len(LATENCY_BUCKETS)  # the histogram's sum (µs), after requests, errors, batches, items and the buckets
# then what Triton's ModelStatistics reports (µs): time queued in the batcher, preprocessing, onnxruntime and the
# journal's commit, each a batch's time once for each of its requests; how many requests those cover; the time of
# failed requests; and when the last inference ended (Unix ms)
STATS = ("queue_us", "input_us", "infer_us", "output_us", "stat_requests", "fail_us", "last_ms")
_N = _SUM + 1 + len(STATS)
_SLOT = struct.Struct("<" + "q" * _N)


def die_with_parent(parent_pid: int) -> None:
    """Called first thing in a worker: the kernel kills it when worker 0 dies, however that dies. (Set here and
    not between fork and exec: a preexec_fn would make Python fork under gRPC's threads.)"""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    if os.getppid() != parent_pid:  # worker 0 died before the line above
        os._exit(1)


class Counters:
    """Per-worker counts (requests, errors, batches, batched items) in DATA/run/counters, memory-mapped: each
    worker writes its own slot, Health sums them. The file starts with the time worker 0 started, which it
    writes when it creates the file."""

    def __init__(self, data_dir: Path, workers: int, index: int, create: bool):
        run = Path(data_dir) / "run"
        run.mkdir(exist_ok=True)
        self.path = run / "counters"
        self.workers = max(1, workers)
        self.index = index
        size = _HEAD.size + _SLOT.size * self.workers
        if create:
            tmp = self.path.with_name("counters.tmp")
            tmp.write_bytes(_HEAD.pack(time.time()) + bytes(size - _HEAD.size))
            os.replace(tmp, self.path)
        self._fh = open(self.path, "r+b")  # noqa: SIM115 - open for the process's life
        self._mm = mmap.mmap(self._fh.fileno(), size)
        # a worker started again after it died goes on from its slot's counts
        self._mine = [0] * _N if create else list(self.slot(index))

    @property
    def started(self) -> float:
        """When the agent (worker 0) started, as Unix time."""
        return _HEAD.unpack_from(self._mm, 0)[0]

    def add(self, requests: int = 0, errors: int = 0, batches: int = 0, items: int = 0) -> None:
        c = self._mine
        c[0] += requests
        c[1] += errors
        c[2] += batches
        c[3] += items
        _SLOT.pack_into(self._mm, _HEAD.size + _SLOT.size * self.index, *c)

    def observe(self, seconds: float) -> None:
        """One ModelInfer answered after `seconds` (the /metrics histogram)."""
        c = self._mine
        c[4 + bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        c[_SUM] += int(seconds * 1e6)
        _SLOT.pack_into(self._mm, _HEAD.size + _SLOT.size * self.index, *c)

    def add_stats(self, **us: int) -> None:
        """Add to the ModelStatistics fields (STATS); last_ms is set, not added."""
        c = self._mine
        for k, v in us.items():
            i = _SUM + 1 + STATS.index(k)
            c[i] = v if k == "last_ms" else c[i] + v
        _SLOT.pack_into(self._mm, _HEAD.size + _SLOT.size * self.index, *c)

    def stats(self) -> dict[str, int]:
        """Every worker's STATS, summed (last_ms: the latest)."""
        out = dict.fromkeys(STATS, 0)
        for i in range(self.workers):
            slot = self.slot(i)
            for k, name in enumerate(STATS):
                v = slot[_SUM + 1 + k]
                out[name] = max(out[name], v) if name == "last_ms" else out[name] + v
        return out

    def latency(self) -> tuple[list[int], float]:
        """Every worker's ModelInfer durations: (count per bucket, not cumulative; their sum in seconds)."""
        counts = [0] * len(LATENCY_BUCKETS)
        total = 0
        for i in range(self.workers):
            slot = self.slot(i)
            for k in range(len(LATENCY_BUCKETS)):
                counts[k] += slot[4 + k]
            total += slot[_SUM]
        return counts, total / 1e6

    def slot(self, index: int) -> tuple[int, int, int, int]:
        return _SLOT.unpack_from(self._mm, _HEAD.size + _SLOT.size * index)

    def total(self) -> dict[str, int]:
        out = [0, 0, 0, 0]
        for i in range(self.workers):
            for k, v in enumerate(self.slot(i)[:4]):
                out[k] += v
        return dict(zip(("requests", "errors", "batches", "batched_items"), out, strict=True))

    def close(self) -> None:
        self._mm.close()
        self._fh.close()


class Workers:
    """Worker 0's side: start workers 1..N-1 on the port it listens on, start again any that dies, stop them."""

    def __init__(self, data_dir: Path, host: str, port: int, workers: int, http: str | None = None):
        self.data_dir = Path(data_dir)
        self.listen = f"{host}:{port}"
        self.http = http  # the REST port worker 0 bound (not agent.json's, which may say port 0)
        self.n = workers
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self._stopping = False
        self._watch: asyncio.Task | None = None

    async def start(self, timeout: float = 120.0) -> None:
        await asyncio.gather(*(self._spawn(i, timeout) for i in range(1, self.n)))
        self._watch = asyncio.get_running_loop().create_task(self._watch_loop())

    async def _spawn(self, index: int, timeout: float) -> None:
        cmd = [sys.executable, "-m", "edge_agent.cli", "serve", "--data-dir", str(self.data_dir),
               "--listen", self.listen, "--workers", str(self.n), "--worker-index", str(index),
               *(["--http", self.http] if self.http else [])]
        env = {**os.environ, "CDL_EDGE_PARENT_PID": str(os.getpid())}
        proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
                                                    env=env)
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout)
        except TimeoutError:
            line = b""
        if not line.startswith(b"ready"):
            proc.kill()
            await proc.wait()
            raise OSError(f"worker {index} did not start on {self.listen} (exit status {proc.returncode}); "
                          "its log is above")
        self.procs[index] = proc

    async def _watch_loop(self) -> None:
        while not self._stopping:
            waits = {asyncio.ensure_future(p.wait()): i for i, p in self.procs.items()}
            done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for t in pending:
                t.cancel()
            if self._stopping:
                return
            for t in done:
                i = waits[t]
                log.error("worker %d exited with status %s; starting it again", i, t.result())
                await asyncio.sleep(1.0)
                if self._stopping:
                    return
                try:
                    await self._spawn(i, 120.0)
                except OSError as exc:
                    log.error("%s", exc)

    async def stop(self, grace: float = 5.0) -> None:
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
        for p in self.procs.values():
            if p.returncode is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                await asyncio.wait_for(p.wait(), grace)
            except TimeoutError:
                p.kill()
                await p.wait()

"""One run of the pipeline at a time in a workspace: a `cdl run` in a terminal and a studio's job (or two
studios' jobs) wait for each other instead of writing the same files at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from runtime.jobs import Runner


def _cdl(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "runtime.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_a_second_run_waits_for_the_first(small_bbc):
    ws = small_bbc
    assert Runner(ws).run(until="model.preprocess").ok
    first = _cdl("-w", str(ws.root), "run", "model.train", "--set", "model.train.epochs=500",
                 "--set", "model.train.patience=0", "--set", "model.train.use_tuned=false")
    second = None
    try:
        deadline = time.time() + 120
        while time.time() < deadline:  # the first is training
            run = ws.store.last_step_run("model.train")
            if run is not None and run.status == "running":
                break
            time.sleep(0.2)
        second = _cdl("-w", str(ws.root), "run", "model.preprocess")
        time.sleep(4)
        assert second.poll() is None, second.communicate()  # it waits
        assert ws.store.last_step_run("model.preprocess").status == "done"
        runs_before = ws.store.last_step_run("model.preprocess").id
        killed_at = time.time()
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        out, err = second.communicate(timeout=300)
        assert second.returncode == 0, err[-2000:]
        assert f"waiting for another run in this workspace to finish (pid {first.pid}, cdl run " in out + err
        run = ws.store.last_step_run("model.preprocess")
        assert run.id != runs_before and run.status == "done"
        assert run.started.timestamp() >= killed_at - 1  # it started only once the first was gone
        assert ws.store.last_step_run("model.train").status == "failed"  # the killed run, failed by the second
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(10)


def test_a_run_inside_a_run_of_the_same_process_does_not_wait(small_bbc, tmp_path):
    from runtime.jobs.runner import _RunLock

    ws = small_bbc
    path = ws.root / ".cdl" / "run.lock"
    import threading

    cancel = threading.Event()
    with _RunLock(path, None, lambda h: None, cancel) as outer:
        assert outer.held
        assert Runner(ws).run(steps=["model.preprocess"]).ok  # re-entrant: no deadlock
        assert os.path.exists(path)


def test_a_cancel_ends_the_wait(small_bbc):
    """A run waiting for another run's lock is cancelled (the studio's Cancel, Ctrl-C): it stops waiting and
    reports cancelled, running nothing."""
    import threading

    ws = small_bbc
    hold = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, sys, time\n"
        "fh = open(sys.argv[1], 'a+'); fcntl.flock(fh.fileno(), fcntl.LOCK_EX)\n"
        "fh.seek(0); fh.truncate(); fh.write('pid 1, cdl run'); fh.flush(); print('holding', flush=True)\n"
        "time.sleep(60)\n"), str(ws.root / ".cdl" / "run.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert hold.stdout.readline().strip() == "holding"
        cancel = threading.Event()
        said: list[str] = []
        runner = Runner(ws, cancel=cancel)
        runner.bus.subscribe(lambda ev: said.append(ev.message or ""))
        threading.Timer(1.0, cancel.set).start()
        t0 = time.monotonic()
        res = runner.run(steps=["model.preprocess"])
        assert res.status == "cancelled" and [o.status for o in res.steps] == ["not-run"]
        assert time.monotonic() - t0 < 10
        assert any("waiting for another run in this workspace to finish (pid 1, cdl run)" in m for m in said)
    finally:
        hold.kill()
        hold.wait(10)

"""The runtime process: a real gRPC server on 127.0.0.1, real worker processes."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys

import grpc
import pytest

from runtime.domain.errors import CdlError
from runtime.server.client import RuntimeClient
from runtime.server.server import check_listen, make_server
from tests.conftest import reap, wait_gone


@pytest.fixture
def served(small_bbc):
    server, address, manager = make_server(small_bbc, "127.0.0.1:0")
    client = RuntimeClient(address)
    yield small_bbc, client, manager
    client.close()
    manager.shutdown()
    server.stop(0)


def _events(client, job):
    return list(client.watch_job(job, timeout=600))


def test_submit_and_watch_a_job(served):
    ws, client, _ = served
    assert client.get_status()["steps"][0] == {**client.get_status()["steps"][0], "id": "data.import",
                                               "status": "done"}
    job, plan = client.submit_job(until="model.evaluate")
    assert plan[-1] == "model.evaluate"
    events = _events(client, job)
    kinds = [e.kind.value for e in events]
    assert kinds[0] == "job-started" and kinds[-1] == "job-finished"
    assert events[-1].data["status"] == "done"
    finished = [e.step for e in events if e.kind.value == "finished"]
    assert finished == ["model.preprocess", "model.tune", "model.train", "model.register", "model.evaluate"]
    epochs = [e.data["epoch"] for e in events if e.kind.value == "metric" and e.step == "model.train"]
    assert epochs == list(range(1, len(epochs) + 1)) and epochs
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    # replay from a sequence number (a watcher that reconnects)
    again = list(client.watch_job(job, from_seq=events[-3].seq))
    assert [e.seq for e in again] == [e.seq for e in events[-2:]]
    jobs = client.list_jobs()
    assert jobs[0]["job_id"] == job and jobs[0]["status"] == "done" and jobs[0]["plan"] == plan
    steps = {s["id"]: s["status"] for s in client.get_status()["steps"]}
    assert steps["model.evaluate"] == "done"
    # a job run with overrides leaves its steps stale against cdl.yaml, and says why
    job, _ = client.submit_job(steps=["model.tune"], overrides={"model.tune": {"n_trials": 1}})
    assert _events(client, job)[-1].data["status"] == "done"
    tune = [s for s in client.get_status()["steps"] if s["id"] == "model.tune"][0]
    assert tune["status"] == "stale" and "parameters" in tune["reason"]


def _long_training(client) -> str:  # noqa: ANN001
    """A job that trains for 500 epochs, once its first epoch has reported: its id."""
    job, _ = client.submit_job(until="model.train", overrides={
        "model.tune": {"n_trials": 1, "max_epochs": 1},
        "model.train": {"epochs": 500, "patience": 0, "use_tuned": False, "batch_size": 8}})
    for e in client.watch_job(job, timeout=300):
        if e.kind.value == "metric" and e.step == "model.train":
            return job
    raise AssertionError(f"job {job} ended before training reported an epoch")


def test_cancel_a_running_job(served):
    ws, client, _ = served
    job = _long_training(client)
    pid = ws.store.job(job).pid
    assert client.cancel_job(job) == "cancelled"
    assert pid
    rest = list(client.watch_job(job, timeout=60))
    assert rest[-1].kind.value == "job-finished" and rest[-1].data["status"] == "cancelled"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    run = ws.store.last_step_run("model.train")
    assert run.status == "failed" and "cancel" in run.error
    assert ws.store.job(job).status == "cancelled"
    # the flowchart shows the step cancelled, not failed, whichever of the two recorded it
    from runtime.jobs import Runner

    state = {s.id: s for s in Runner(ws).statuses()}["model.train"]
    assert state.status == "cancelled", (state.status, run.error)
    # the server keeps serving, and the next job runs
    job2, _ = client.submit_job(steps=["model.preprocess"])
    assert _events(client, job2)[-1].data["status"] == "done"


def test_a_crashing_worker_fails_its_job_and_the_server_keeps_serving(served):
    ws, client, manager = served
    (ws.root / "src" / "crash.py").write_text(
        "import os\n\ndef build_model(input_shape, num_classes, params):\n    os.abort()\n")
    job, _ = client.submit_job(steps=["model.preprocess", "model.train"], overrides={
        "model.train": {"template": "src:crash.py", "use_tuned": False}})
    events = _events(client, job)
    assert events[-1].data["status"] == "failed"
    rec = ws.store.job(job)
    assert rec.status == "failed" and "exited with code" in rec.error
    assert "Fatal Python error: Aborted" in rec.error  # the end of the worker's log
    assert ws.store.last_step_run("model.train").status == "failed"
    assert client.get_status()["running_jobs"] == 0
    job2, _ = client.submit_job(steps=["model.preprocess"])
    assert _events(client, job2)[-1].data["status"] == "done"


def test_a_python_error_in_a_step_carries_the_traceback(served):
    ws, client, _ = served
    (ws.root / "src" / "broken.py").write_text(
        "def build_model(input_shape, num_classes, params):\n    raise RuntimeError('my layer is broken')\n")
    job, _ = client.submit_job(steps=["model.preprocess", "model.train"], overrides={
        "model.train": {"template": "src:broken.py", "use_tuned": False}})
    events = _events(client, job)
    failed = [e for e in events if e.kind.value == "failed"][0]
    assert "my layer is broken" in failed.message and "Traceback" in failed.data["traceback"]
    assert 'File "src/broken.py", line 2, in build_model' in failed.data["traceback"]
    assert ws.store.job(job).error.startswith("model.train: src:broken.py: build_model(input_shape=(2142,), "
                                              "num_classes=5, params) failed: RuntimeError: my layer is broken "
                                              "(src/broken.py, line 2, in build_model)")


def test_bad_requests_get_clear_status_codes(served):
    _, client, _ = served
    with pytest.raises(grpc.RpcError) as e:
        client.submit_job(steps=["model.nope"])
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "model.nope" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        client.submit_job(steps=["model.train"], overrides={"model.train": {"epochs": "many"}})
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "epochs" in e.value.details()
    # a step's own rules too, at once (it was a job that failed in its worker process, as "ConfigError: ...")
    with pytest.raises(grpc.RpcError) as e:
        client.submit_job(until="model.tune", overrides={"model.tune": {"search_space": {
            "dropuot": {"type": "float", "low": 0.0, "high": 0.5}}}})
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "model.tune.search_space.dropuot: training takes no such parameter (did you mean 'dropout'?)" in \
        e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        client.cancel_job("nosuchjob")
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_only_loopback_or_unix_socket():
    for bad in ("0.0.0.0:50051", "192.168.1.2:1", "example.com:80", "[::]:5"):
        with pytest.raises(CdlError, match="loopback"):
            check_listen(bad)
    for good in ("127.0.0.1:0", "localhost:5000", "[::1]:7", "unix:/tmp/x.sock"):
        assert check_listen(good) == good
    # gRPC took a port out of range as "any free port": the studio would look for the runtime elsewhere
    for bad, says in (("127.0.0.1:99999", "from 0 to 65535"), ("127.0.0.1:x", "from 0 to 65535"),
                      ("127.0.0.1", "expected HOST:PORT")):
        with pytest.raises(CdlError, match=says):
            check_listen(bad)


def test_unix_socket_is_owner_only(small_bbc, tmp_path):
    sock = tmp_path / "rt" / "runtime.sock"
    server, address, manager = make_server(small_bbc, f"unix:{sock}")
    try:
        mode = stat.S_IMODE(os.stat(sock).st_mode)
        assert mode == 0o600
        client = RuntimeClient(address)
        assert client.get_status()["workspace"] == str(small_bbc.root)
        client.close()
    finally:
        manager.shutdown()
        server.stop(0)


def test_a_second_runtime_on_a_served_port_or_socket_is_refused(small_bbc, tmp_path):
    """gRPC binds with SO_REUSEPORT: a second runtime on the first's port bound too, and the studio's calls went to
    either; on a unix socket, the second unlinked the first's socket file and took its place. A stale socket file
    (its runtime died) is still taken over."""
    import socket

    server, address, manager = make_server(small_bbc, "127.0.0.1:0")
    try:
        with pytest.raises(CdlError, match=rf"cannot listen on {address}: the port is in use"):
            make_server(small_bbc, address)
    finally:
        manager.shutdown()
        server.stop(0)
    with socket.socket() as other:  # a program that is no runtime: gRPC's traceback before
        other.bind(("127.0.0.1", 0))
        other.listen()
        busy = f"127.0.0.1:{other.getsockname()[1]}"
        with pytest.raises(CdlError, match=rf"cannot listen on {busy}: the port is in use"):
            make_server(small_bbc, busy)
    sock = tmp_path / "runtime.sock"
    server, address, manager = make_server(small_bbc, f"unix:{sock}")
    try:
        with pytest.raises(CdlError, match="a runtime is serving on it"):
            make_server(small_bbc, f"unix:{sock}")
        client = RuntimeClient(address)
        assert client.get_status()["workspace"] == str(small_bbc.root)  # still the first's
        client.close()
    finally:
        manager.shutdown()
        server.stop(0).wait(10)  # gRPC unlinks its socket file as it shuts down: after the next one is made, if late
    sock.unlink(missing_ok=True)
    with socket.socket(socket.AF_UNIX) as dead:  # a socket file nobody listens on any more
        dead.bind(str(sock))
    assert sock.exists()
    server, address, manager = make_server(small_bbc, f"unix:{sock}")
    manager.shutdown()
    server.stop(0)


def test_cdl_runtime_serve_command(small_bbc):
    proc = subprocess.Popen([sys.executable, "-m", "runtime.cli", "-w", str(small_bbc.root), "runtime", "serve",
                             "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("listening on 127.0.0.1:")
        client = RuntimeClient(line.split()[-1])
        client.wait_ready(10)
        assert client.get_status()["dataset_version"] == "v1"
        client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def _serve(root) -> tuple[subprocess.Popen, RuntimeClient]:  # noqa: ANN001
    proc = subprocess.Popen([sys.executable, "-m", "runtime.cli", "-w", str(root), "runtime", "serve",
                             "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    assert line.startswith("listening on 127.0.0.1:"), proc.stderr.read()[-2000:] if proc.poll() else line
    client = RuntimeClient(line.split()[-1])
    client.wait_ready(15)
    return proc, client


def test_a_killed_runtime_takes_its_jobs_with_it(small_bbc):
    """`cdl runtime serve` SIGKILLed mid-job (the studio that started it crashed): the job's worker does not
    train on as an orphan that no one can watch or cancel; the next runtime marks the job and its step failed."""

    from runtime.domain.processes import pid_alive

    ws = small_bbc
    proc, client = _serve(ws.root)
    pid = None
    try:
        job = _long_training(client)
        pid = ws.store.job(job).pid
        assert pid and pid_alive(pid)
        client.close()
        proc.kill()
        proc.wait(10)
        assert wait_gone(pid), "the job's worker went on training after its runtime died"
    finally:
        reap(proc, pid)
    proc, client = _serve(ws.root)  # the next runtime
    try:
        rec = ws.store.job(job)
        assert rec.status == "failed" and "runtime process stopped" in rec.error
        run = ws.store.last_step_run("model.train")
        assert run.status == "failed" and run.job == job
        assert client.get_status()["running_jobs"] == 0
    finally:
        client.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


def test_two_runtimes_on_one_workspace(small_bbc):
    """A second studio opens the workspace, so a second runtime starts: it must not fail the first one's
    running job (it used to, at its start), it streams that job live from the registry, and cancelling it is
    the first runtime's business."""
    ws = small_bbc
    a_proc, a = _serve(ws.root)
    b_proc = b = None
    try:
        job = _long_training(a)
        b_proc, b = _serve(ws.root)  # the second studio's runtime
        assert ws.store.job(job).status == "running"
        assert a.list_jobs()[0]["status"] == "running"
        got = []
        for e in b.watch_job(job, timeout=120):  # replayed, then live from the registry
            got.append(e)
            if sum(x.kind.value == "metric" and x.step == "model.train" for x in got) >= 3:
                break
        epochs = [x.data["epoch"] for x in got if x.kind.value == "metric" and x.step == "model.train"]
        assert epochs == [1, 2, 3]
        with pytest.raises(grpc.RpcError) as refused:
            b.cancel_job(job)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert f"runs in another runtime (pid {a_proc.pid} on " in refused.value.details()
        assert a.cancel_job(job) == "cancelled"
        rest = list(b.watch_job(job, from_seq=got[-1].seq, timeout=120))
        assert rest[-1].kind.value == "job-finished" and rest[-1].data["status"] == "cancelled"
        assert [e.seq for e in rest] == list(range(got[-1].seq + 1, rest[-1].seq + 1))
    finally:
        for c in (a, b):
            if c is not None:
                c.close()
        for p in (a_proc, b_proc):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(30)


def test_a_runtime_stopping_cancels_its_jobs_and_records_them_so(small_bbc):
    """The studio closed (its runtime stopped) while a step ran: the run was recorded as "failed: the worker
    process exited with code -15 without finishing", a red node for a run the person chose to stop, and a job
    queued behind it stayed queued. Both end cancelled, recorded before shutdown returns."""
    from runtime.domain.steps import CANCELLED_BY_USER, run_ending

    server, address, manager = make_server(small_bbc, "127.0.0.1:0")
    client = RuntimeClient(address)
    try:
        running, _ = client.submit_job(until="model.tune", overrides={"model.tune": {"n_trials": 50, "max_epochs": 50,
                                                                                  "pruner": "none"}})
        queued, _ = client.submit_job(steps=["model.tune"], force=True)
        step = next(ev.step for ev in client.watch_job(running, timeout=120) if ev.kind.value == "metric")
        manager.shutdown()  # returns once the jobs are recorded (no timing asserted: machines are noisy)
        store = small_bbc.store
        assert (store.job(running).status, store.job(running).error) == ("cancelled", CANCELLED_BY_USER)
        assert store.job(queued).status == "cancelled" and "before it started" in store.job(queued).error
        run = store.step_runs(step, limit=1)[0]
        assert run.job == running and run_ending(run.status, run.error, run.summary) == "cancelled", \
            (run.status, run.error)
    finally:
        client.close()
        server.stop(0)

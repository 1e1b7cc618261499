"""Shared fixtures. Tests that need ../shared/datasets skip with a reason when it is absent."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

import studio  # noqa: F401 - first, before any Qt call: it guards None against PySide6's stray decrefs

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.pop("CDL_DATABASE_URL", None)
# the studio keeps its recent workspaces in the user's settings (QSettings, under XDG_CONFIG_HOME): the tests'
# workspaces, in temporary folders, filled the developer's list
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="cdl-tests-config-")
atexit.register(shutil.rmtree, os.environ["XDG_CONFIG_HOME"], True)  # one folder a test run: not left behind

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CDL_SHARED", REPO.parent / "shared")) / "datasets"
BBC_ZIP = SHARED / "bbc" / "bbc-fulltext.zip"
FASHION = SHARED / "fashion-mnist"
LABEL_STUDIO = SHARED / "label-studio"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is not available (tests with real data need ../shared/datasets)")
    return path


@pytest.fixture
def bbc_zip() -> Path:
    return need(BBC_ZIP)


@pytest.fixture
def fashion_dir() -> Path:
    return need(FASHION)


@pytest.fixture
def ls_dir() -> Path:
    return need(LABEL_STUDIO)


@pytest.fixture
def postgres_url() -> str:
    url = os.environ.get("CDL_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("no PostgreSQL server: set CDL_TEST_POSTGRES_URL (.ci/run starts one)")
    try:
        import sqlalchemy

        eng = sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        with eng.connect():
            pass
        eng.dispose()
    except Exception as exc:  # noqa: BLE001
        if os.environ.get("CDL_TEST_POSTGRES_REQUIRED"):
            pytest.fail(f"PostgreSQL at {url} is not reachable (CDL_TEST_POSTGRES_REQUIRED is set): {exc}")
        pytest.skip(f"PostgreSQL at {url} is not reachable: {exc}")
    return url


@pytest.fixture
def pg_schema(postgres_url: str):
    """A fresh schema per test, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:10]}"
    yield postgres_url, schema
    import sqlalchemy

    eng = sqlalchemy.create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with eng.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    eng.dispose()


def copied(template: Path, tmp_path: Path):
    """A fresh copy of a session-built workspace for one test (tests may change it)."""
    from runtime.workspace import Workspace

    root = tmp_path / "ws"
    shutil.copytree(template, root, symlinks=True)
    ws = Workspace(root)
    yield ws
    ws.close()


def train_review_package(ws, name: str = "ws") -> None:  # noqa: ANN001
    """Run the model pipeline, approve version 1, and run the deployment pipeline up to the bundles."""
    from runtime.jobs import Runner
    from runtime.registry import review

    res = Runner(ws).run(until="model.evaluate")
    assert res.ok, [o.error for o in res.steps]
    review(ws.store, f"{name}:1", True, "fixture", "tester")
    res = Runner(ws).run(until="deploy.package")
    assert res.ok, [o.error for o in res.steps]


def make_bbc_subset(dest: Path, per_class: int = 30, extra: dict[str, bytes] | None = None) -> Path:
    """A small zip in the BBC layout, built from the real archive (first `per_class` files per class)."""
    import zipfile

    counts: dict[str, int] = {}
    with zipfile.ZipFile(need(BBC_ZIP)) as src, zipfile.ZipFile(dest, "w") as out:
        for info in src.infolist():
            if info.is_dir():
                continue
            cls = info.filename.split("/")[-2]
            if counts.get(cls, 0) >= per_class and not info.filename.endswith("sport/199.txt"):
                continue
            counts[cls] = counts.get(cls, 0) + 1
            out.writestr(info.filename, src.read(info))
        for name, data in (extra or {}).items():
            out.writestr(name, data)
    return dest


@pytest.fixture(scope="session")
def bbc_pipeline_template(tmp_path_factory) -> Path:
    """A workspace with the full BBC data pipeline run once per session; tests copy it."""
    need(BBC_ZIP)
    from runtime.api import add_source
    from runtime.jobs import Runner
    from runtime.workspace import Workspace

    root = tmp_path_factory.mktemp("bbc") / "ws"
    ws = Workspace.init(root, "text-classification")
    add_source(ws, BBC_ZIP)
    result = Runner(ws).run(until="data.label")
    assert result.ok, result.steps
    ws.close()
    return root


@pytest.fixture
def bbc_ws(bbc_pipeline_template: Path, tmp_path: Path):
    yield from copied(bbc_pipeline_template, tmp_path)


@pytest.fixture
def text_ws(tmp_path: Path):
    from runtime.workspace import Workspace

    ws = Workspace.init(tmp_path / "ws", "text-classification")
    yield ws
    ws.close()


@pytest.fixture
def image_ws(tmp_path: Path):
    from runtime.workspace import Workspace

    ws = Workspace.init(tmp_path / "ws", "image-classification")
    yield ws
    ws.close()


def make_fashion_subset(dest: Path, n_train: int = 600, n_test: int = 200) -> Path:
    """Real Fashion-MNIST idx files cut to the first n records of each split."""
    import gzip
    import struct

    dest.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        img = gzip.decompress((need(FASHION) / f"{prefix}-images-idx3-ubyte.gz").read_bytes())
        lab = gzip.decompress((FASHION / f"{prefix}-labels-idx1-ubyte.gz").read_bytes())
        (dest / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(struct.pack(">IIII", 0x803, n, 28, 28) + img[16 : 16 + n * 784], 1))
        (dest / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(struct.pack(">II", 0x801, n) + lab[8 : 8 + n], 1))
    return dest


FAST_TEXT = {
    "model.tune": {"n_trials": 3, "max_epochs": 3},
    "model.train": {"epochs": 4, "patience": 2},
}


def small_bbc_workspace(root: Path, per_class: int = 30, tune_trials: int = 3):
    """A text workspace on a real BBC subset with a fast model configuration, data pipeline run."""
    from runtime.api import add_source
    from runtime.jobs import Runner
    from runtime.workspace import Workspace

    ws = Workspace.init(root, "text-classification")
    src = make_bbc_subset(root.parent / f"{root.name}-bbc.zip", per_class=per_class)
    add_source(ws, src)
    cfg = ws.config()
    cfg.steps["model.tune"].update({"n_trials": tune_trials, "max_epochs": 3})
    cfg.steps["model.train"].update({"epochs": 4, "patience": 2})
    cfg.steps["model.preprocess"].update({"vocab_size": 3000})
    cfg.save()
    assert Runner(ws).run(until="data.label").ok
    return ws


def tiny_fashion_workspace(root: Path, n_train: int = 300, n_test: int = 100):
    """An image workspace on real Fashion-MNIST records (skips without ../shared), one quick trial and one epoch:
    for tests of what comes after training, not of its accuracy."""
    from runtime.api import add_source
    from runtime.workspace import Workspace

    ws = Workspace.init(root, "image-classification")
    add_source(ws, make_fashion_subset(root.parent / f"{root.name}-src", n_train, n_test), {"class_names": "fashion-mnist"})
    cfg = ws.config()
    cfg.steps["model.tune"].update({"n_trials": 1, "max_epochs": 1})
    cfg.steps["model.train"].update({"epochs": 1, "use_tuned": False})
    cfg.steps["model.evaluate"]["threshold"] = 0.0
    cfg.save()
    return ws


@pytest.fixture(scope="session")
def small_bbc_template(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("small-bbc") / "ws"
    ws = small_bbc_workspace(root)
    ws.close()
    return root


@pytest.fixture
def small_bbc(small_bbc_template: Path, tmp_path: Path):
    yield from copied(small_bbc_template, tmp_path)


# -- real edge agents on 127.0.0.1 --------------------------------------------------------------------------


def oip_text_request(text: str, model: str = "ws"):  # noqa: ANN201
    """A ModelInfer request for one text, built with the protocol's stock messages (tritonclient's), the text as
    raw BYTES contents (a 4-byte little-endian length, then the bytes)."""
    import struct

    from tritonclient.grpc import service_pb2

    r = service_pb2.ModelInferRequest(model_name=model)
    r.inputs.add(name="text", datatype="BYTES", shape=[1])
    data = text.encode()
    r.raw_input_contents.append(struct.pack("<I", len(data)) + data)
    return r


def wait_gone(pid: int, seconds: float = 30.0) -> bool:
    """Whether process `pid` has ended (or is a zombie) within `seconds`."""
    import time

    from runtime.domain.processes import pid_alive

    deadline = time.monotonic() + seconds
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not pid_alive(pid)


def reap(proc: subprocess.Popen | None, pid: int | None = None) -> None:
    """After a test that kills a parent and expects its child to go: kill whichever of the two still runs, so a
    failed expectation leaves no process behind."""
    import signal

    from runtime.domain.processes import pid_alive

    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait(10)
    if pid and pid_alive(pid):
        os.kill(pid, signal.SIGKILL)


class AgentProcess:
    """`cdl-edge serve` in a subprocess on 127.0.0.1:0; the port is read from its first line."""

    def __init__(self, data_dir: Path, workers: int = 1):
        self.data_dir = Path(data_dir)
        self.workers = workers
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.log_file = self.data_dir.parent / f"{self.data_dir.name}-agent.log"

    def start(self) -> int:
        # its log goes to a file: a pipe nobody reads blocks the agent once full (it logs each push and collection)
        with open(self.log_file, "a") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "edge_agent.cli", "serve", "--data-dir",
                                          str(self.data_dir), "--listen", "127.0.0.1:0", "--workers", str(self.workers)],
                                         stdout=subprocess.PIPE, stderr=log, text=True)
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.proc.wait(10)
            raise RuntimeError(f"agent did not start: {line!r} {self.log()[-2000:]}")
        self.port = int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
        self.metrics_url = line.split("metrics on ")[1].split()[0].rstrip(";") if "metrics on " in line else None
        self.rest_url = line.split("REST on ")[1].split()[0] if "REST on " in line else None
        return self.port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        """What the agent wrote on stderr, every start of it."""
        return self.log_file.read_text() if self.log_file.exists() else ""

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
def agent_factory(tmp_path):
    started: list[AgentProcess] = []

    def make(ws, name: str = "dev1", inference_auth: str = "open", raw_below: float = 0.6,
             workers: int = 1) -> AgentProcess:
        from runtime.devices import enroll

        out = tmp_path / f"device-{name}"
        enroll(ws, name, "127.0.0.1:0", out, inference_auth, raw_below)
        agent = AgentProcess(out, workers)
        agent.start()
        ws.store.update_device(name, address=agent.address)
        started.append(agent)
        return agent

    yield make
    for a in started:
        a.stop()


def restart(ws, agent: AgentProcess, name: str = "dev1") -> None:
    agent.start()
    ws.store.update_device(name, address=agent.address)


# -- a trained, reviewed, exported and packaged model on small real BBC data --------------------------------


@pytest.fixture(scope="session")
def packaged_template(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("packaged") / "ws"
    ws = small_bbc_workspace(root, per_class=40, tune_trials=1)
    cfg = ws.config()
    cfg.steps["deploy.compress"]["methods"] = ["dynamic_int8", {"static_int8": {"calibration_samples": 64}}]
    cfg.steps["deploy.revise"].update({"runs_b1": 10, "runs_b64": 3})
    cfg.save()
    train_review_package(ws)
    ws.close()
    return root


@pytest.fixture
def packaged(packaged_template: Path, tmp_path: Path):
    yield from copied(packaged_template, tmp_path)

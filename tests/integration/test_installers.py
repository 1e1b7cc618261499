"""`make dist` and what it builds: the wheel in a fresh virtualenv, the one-file launcher installing the slim
edge extra from the package index, the desktop and edge packages."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, str(ROOT / "installers" / "build.py"), "--out", str(out)], check=True,
                   timeout=300)
    return out


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def test_dist_builds_every_package(dist: Path):
    names = sorted(p.name for p in dist.iterdir())
    wheel = next(p for p in dist.glob("cdl_studio-*-py3-none-any.whl"))
    version = wheel.name.split("-")[1]
    assert names == sorted(["SHA256SUMS", wheel.name, "cdl-studio.pyz", f"cdl-studio-{version}-linux-desktop.tar.gz",
                            f"cdl-edge-{version}.tar.gz"])
    with zipfile.ZipFile(wheel) as zf:
        members = set(zf.namelist())
        meta = zf.read(f"cdl_studio-{version}.dist-info/entry_points.txt").decode()
    assert "runtime/store/migrations/versions/0002_trial_worker.py" in members
    assert "edge_agent/proto/open_inference.proto" in members
    assert not any(m.startswith("tests/") for m in members)
    assert "cdl = runtime.cli:main" in meta and "cdl-edge = edge_agent.cli:main" in meta
    with tarfile.open(dist / f"cdl-studio-{version}-linux-desktop.tar.gz") as tar:
        files = {Path(m.name).name: m for m in tar.getmembers()}
        entry = tar.extractfile(files["cdl-studio.desktop"]).read().decode()
    assert {"cdl-studio.pyz", "cdl-studio.svg", "install-desktop.sh"} <= set(files)
    assert files["install-desktop.sh"].mode & 0o111
    assert "Icon=cdl-studio" in entry and "Exec=" in entry and "Type=Application" in entry
    with tarfile.open(dist / f"cdl-edge-{version}.tar.gz") as tar:
        assert {Path(m.name).name for m in tar.getmembers()} >= {wheel.name, "install.sh", "cdl-edge.service",
                                                                   "Containerfile", "README.txt"}
    sums = (dist / "SHA256SUMS").read_text()
    assert wheel.name in sums and "cdl-studio.pyz" in sums


def test_the_wheel_in_a_fresh_virtualenv_runs_cdl_and_cdl_edge(dist: Path, tmp_path: Path):
    """The wheel installed (no dependencies) into a new venv; the dependencies come from this environment's
    site-packages through a .pth line, so the commands run the wheel's code, not the checkout's."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    wheel = next(dist.glob("cdl_studio-*.whl"))
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
                   check=True, timeout=300, env=_clean_env())
    site = next((venv / "lib").glob("python3.*/site-packages"))
    (site / "zz-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = _clean_env()
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import runtime, edge_agent; "
                            "print(runtime.__file__); print(edge_agent.__file__)"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=60)
    assert where.returncode == 0, where.stderr
    assert all(line.startswith(str(site)) for line in where.stdout.split()), where.stdout
    for exe, expect in (("cdl", "CDL Studio: continuous deep learning"), ("cdl-edge", "CDL Studio edge agent")):
        out = subprocess.run([str(venv / "bin" / exe), "--help"], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert expect in out.stdout
    out = subprocess.run([str(venv / "bin" / "cdl"), "tune", "worker", "--help"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "--workspace" in out.stdout


@pytest.mark.slow
def test_the_launcher_installs_the_edge_agent_alone_from_the_index(dist: Path, tmp_path: Path):
    """One file, a real pip install from the package index: the edge extra brings no torch, TensorFlow or Qt."""
    home = tmp_path / "home"
    cmd = [sys.executable, str(dist / "cdl-studio.pyz"), "--home", str(home), "--extras", "edge",
           "--entry", "cdl-edge", "--", "--help"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=_clean_env(), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "CDL Studio edge agent" in out.stdout
    assert "installing cdl_studio-" in out.stderr
    listed = subprocess.run([str(home / "venv" / "bin" / "python"), "-m", "pip", "list", "--format=freeze"],
                            capture_output=True, text=True, timeout=120, env=_clean_env()).stdout.lower()
    installed = {line.split("==")[0] for line in listed.split()}
    assert {"onnxruntime-gpu", "grpcio", "numpy", "cdl-studio"} <= installed
    assert not installed & {"torch", "tensorflow", "pyside6-essentials", "sqlmodel", "dvc", "optuna"}, installed
    # the base install's `cdl` works there too (heavy engines load only inside the commands that need them)
    cdl = subprocess.run([str(home / "venv" / "bin" / "cdl"), "--help"], capture_output=True, text=True,
                         timeout=120, env=_clean_env(), cwd=tmp_path)
    assert cdl.returncode == 0 and "CDL Studio: continuous deep learning" in cdl.stdout, cdl.stderr
    # the second start installs nothing and runs at once
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=_clean_env(), cwd=tmp_path)
    assert again.returncode == 0 and "installing" not in again.stderr


def test_the_launcher_refuses_a_wrong_entry(dist: Path):
    out = subprocess.run([sys.executable, str(dist / "cdl-studio.pyz"), "--entry", "bash"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode != 0 and "--entry must be one of cdl, cdl-edge" in out.stderr

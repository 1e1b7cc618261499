"""The agent installs alone and loads no engine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {"torch", "tensorflow", "tf-keras", "pyside6-essentials", "pyside6", "sqlmodel", "dvc", "optuna",
             "duckdb", "scikit-learn", "tensorflow-model-optimization", "keras"}


def test_edge_extra_resolves_without_the_engines(tmp_path):
    """What `pip install "cdl-studio[edge]"` would install into an empty environment."""
    report = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                           "--report", str(report), f"{ROOT}[edge]"], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.skip(f"pip could not resolve (no package index here?): {proc.stderr[-500:]}")
    names = {i["metadata"]["name"].lower() for i in json.loads(report.read_text())["install"]}
    assert {"onnxruntime-gpu", "grpcio", "numpy", "cdl-studio"} <= names
    assert not (names & FORBIDDEN), names & FORBIDDEN
    assert len(names) < 40, sorted(names)


def test_agent_imports_no_engine():
    code = ("import sys, json\nimport edge_agent.server, edge_agent.cli\n"
            f"print(json.dumps(sorted(m for m in {sorted(FORBIDDEN | {'PySide6', 'sklearn'})!r} if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_installers_exist():
    unit = (ROOT / "installers" / "edge" / "cdl-edge.service").read_text()
    assert "cdl-edge serve --data-dir" in unit
    # it listens where agent.json says (the enrolled port): --listen 0.0.0.0:8001 served where nobody connects
    start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert "--listen" not in start, start
    assert "--listen" not in (ROOT / "installers" / "edge" / "Containerfile").read_text().split("ENTRYPOINT")[1]
    assert "ENTRYPOINT" in (ROOT / "installers" / "edge" / "Containerfile").read_text()
    # its health check is the command test_cdl_edge_status_reads_the_folder_on_the_device runs against an agent
    health = next(line for line in (ROOT / "installers" / "edge" / "Containerfile").read_text().splitlines()
                  if line.strip().startswith("CMD "))
    assert json.loads(health.strip().removeprefix("CMD ")) == ["cdl-edge", "status", "--data-dir", "/data", "--check"]

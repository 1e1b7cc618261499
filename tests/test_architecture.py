"""The dependency rules of DESIGN.md that import-linter cannot see: what importing a module loads."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ["torch", "tensorflow", "onnx", "onnxruntime", "optuna", "dvc", "sqlmodel", "PySide6", "sklearn"]


def _loaded(code: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys, json\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"],
        capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_runtime_loads_nothing_heavy():
    assert _loaded("import runtime") == []


def test_cdl_help_loads_nothing_heavy():
    assert _loaded("import runtime.cli\nfrom click.testing import CliRunner\nCliRunner().invoke(runtime.cli.cli, ['--help'])") == []


def test_edge_agent_loads_no_engine():
    loaded = _loaded("import edge_agent, edge_agent.cli")
    assert loaded == []


def test_step_registry_loads_nothing_heavy():
    assert set(_loaded("from runtime.steps import known_steps\nknown_steps()")) <= {"sqlmodel"}

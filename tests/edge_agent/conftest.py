"""A trained, reviewed, exported and packaged model on small real BBC data."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import small_bbc_workspace


@pytest.fixture(scope="session")
def packaged_template(tmp_path_factory) -> Path:
    from runtime.jobs import Runner
    from runtime.registry import review

    root = tmp_path_factory.mktemp("packaged") / "ws"
    ws = small_bbc_workspace(root, per_class=40, tune_trials=1)
    cfg = ws.config()
    cfg.steps["deploy.compress"]["methods"] = ["dynamic_int8", {"static_int8": {"calibration_samples": 64}}]
    cfg.steps["deploy.revise"].update({"runs_b1": 10, "runs_b64": 3})
    cfg.save()
    assert Runner(ws).run(until="model.evaluate").ok
    review(ws.store, "ws:1", True, "fixture", "tester")
    res = Runner(ws).run(until="deploy.package")
    assert res.ok, [o.error for o in res.steps]
    ws.close()
    return root


@pytest.fixture
def packaged(packaged_template: Path, tmp_path: Path):
    from runtime.workspace import Workspace

    root = tmp_path / "ws"
    shutil.copytree(packaged_template, root, symlinks=True)
    ws = Workspace(root)
    yield ws
    ws.close()

"""The whole BBC archive, a fast model, packaged; and Fashion-MNIST subsets for images."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import BBC_ZIP, need


def fast(cfg, **train) -> None:  # noqa: ANN001
    cfg.steps["model.tune"].update({"n_trials": 1, "max_epochs": 2})
    cfg.steps["model.train"].update({"epochs": 5, "patience": 2, "use_tuned": False, "refit": False, **train})
    cfg.steps["deploy.compress"]["methods"] = []
    cfg.steps["deploy.revise"].update({"runs_b1": 5, "runs_b64": 3})


@pytest.fixture(scope="session")
def bbc_packaged_template(tmp_path_factory) -> Path:
    need(BBC_ZIP)
    from runtime.api import add_source
    from runtime.jobs import Runner
    from runtime.registry import review
    from runtime.workspace import Workspace

    root = tmp_path_factory.mktemp("bbc-packaged") / "ws"
    ws = Workspace.init(root, "text-classification")
    add_source(ws, BBC_ZIP)
    cfg = ws.config()
    fast(cfg)
    cfg.steps["model.preprocess"]["vocab_size"] = 5000
    cfg.save()
    res = Runner(ws).run(until="model.evaluate")
    assert res.ok, [o.error for o in res.steps]
    review(ws.store, "ws:1", True, "fixture", "tester")
    res = Runner(ws).run(until="deploy.package")
    assert res.ok, [o.error for o in res.steps]
    ws.close()
    return root


@pytest.fixture
def bbc_packaged(bbc_packaged_template: Path, tmp_path: Path):
    from runtime.workspace import Workspace

    root = tmp_path / "ws"
    shutil.copytree(bbc_packaged_template, root, symlinks=True)
    ws = Workspace(root)
    yield ws
    ws.close()

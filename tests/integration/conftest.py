"""The whole BBC archive, a fast model, packaged; and Fashion-MNIST subsets for images."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import BBC_ZIP, copied, need, train_review_package


def fast(cfg, **train) -> None:  # noqa: ANN001
    cfg.steps["model.tune"].update({"n_trials": 1, "max_epochs": 2})
    cfg.steps["model.train"].update({"epochs": 5, "patience": 2, "use_tuned": False, "refit": False, **train})
    cfg.steps["deploy.compress"]["methods"] = []
    cfg.steps["deploy.revise"].update({"runs_b1": 5, "runs_b64": 3})


@pytest.fixture(scope="session")
def bbc_packaged_template(tmp_path_factory) -> Path:
    need(BBC_ZIP)
    from runtime.api import add_source
    from runtime.workspace import Workspace

    root = tmp_path_factory.mktemp("bbc-packaged") / "ws"
    ws = Workspace.init(root, "text-classification")
    add_source(ws, BBC_ZIP)
    cfg = ws.config()
    fast(cfg)
    cfg.steps["model.preprocess"]["vocab_size"] = 5000
    cfg.save()
    train_review_package(ws)
    ws.close()
    return root


@pytest.fixture
def bbc_packaged(bbc_packaged_template: Path, tmp_path: Path):
    yield from copied(bbc_packaged_template, tmp_path)

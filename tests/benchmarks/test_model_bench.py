"""Model pipeline benchmarks on the full real datasets (CPU)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from runtime.api import add_source
from runtime.jobs import Runner
from runtime.workspace import Workspace
from tests.conftest import BBC_ZIP, FASHION, need


@pytest.fixture(scope="module")
def bbc(tmp_path_factory):
    need(BBC_ZIP)
    ws = Workspace.init(tmp_path_factory.mktemp("bbc") / "ws", "text-classification")
    add_source(ws, BBC_ZIP)
    assert Runner(ws).run(until="data.label").ok
    yield ws
    ws.close()


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    need(FASHION)
    ws = Workspace.init(tmp_path_factory.mktemp("fm") / "ws", "image-classification")
    add_source(ws, FASHION, {"class_names": "fashion-mnist"})
    assert Runner(ws).run(until="model.preprocess").ok
    yield ws
    ws.close()


def test_bbc_default_template_and_tuning(bbc, record):
    t0 = time.perf_counter()
    res = Runner(bbc).run(until="model.evaluate")
    wall = time.perf_counter() - t0
    assert res.ok, [o.error for o in res.steps]
    ev = [o for o in res.steps if o.step == "model.evaluate"][0].summary
    tune = [o for o in res.steps if o.step == "model.tune"][0].summary
    acc = ev["metrics"]["test_accuracy"]
    record("model.bbc_default", test_accuracy=round(acc, 4), macro_f1=round(ev["metrics"]["macro_f1"], 4),
           wall_s=round(wall, 1), trials=tune["trials"], pruned=tune["pruned"], target=0.975)
    assert acc >= 0.975


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_fashion_mnist_cnn(fashion, framework, record):
    t0 = time.perf_counter()
    res = Runner(fashion).run(steps=["model.train"], overrides={
        "model.train": {"framework": framework, "template": "cnn", "epochs": 12, "patience": 3, "use_tuned": False,
                        "batch_size": 64, "lr": 0.001, "hidden": 128, "dropout": 0.3}})
    train_s = time.perf_counter() - t0
    assert res.ok, [o.error for o in res.steps]
    assert Runner(fashion).run(steps=["model.register"]).ok
    ev = Runner(fashion).run(steps=["model.evaluate"])
    assert ev.ok
    acc = ev.steps[0].summary["metrics"]["test_accuracy"]
    summary = res.steps[0].summary
    record(f"model.fashion_cnn_{framework}", test_accuracy=round(acc, 4), train_s=round(train_s, 1),
           epochs=summary["epochs"], device=summary["device"], target_accuracy=0.91, target_s=600)
    assert acc >= 0.91
    assert train_s <= 600


def _plain_torch_loop(X, y, tr, va, classes, epochs, bs, lr, seed) -> float:
    """The same model, data and epochs as model.train, written as a plain PyTorch loop."""
    import torch
    from torch import nn

    from runtime.ml.torch_backend import SmallCNN

    torch.manual_seed(seed)
    t0 = time.perf_counter()
    model = SmallCNN(1, 28, 28, len(classes), 128, 0.3)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    # batches straight from the cached (N, H, W, C) tensors, permuted to NCHW per batch as a PyTorch user would
    # (the memory layout matters: a fully re-laid-out NCHW copy of the data trains about a third slower on CPU)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        model.train()
        order = rng.permutation(tr)
        for i in range(0, len(order), bs):
            idx = order[i : i + bs]
            opt.zero_grad()
            loss = loss_fn(model(torch.from_numpy(X[idx]).permute(0, 3, 1, 2)), torch.from_numpy(y[idx]))
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            for i in range(0, len(va), 512):
                idx = va[i : i + 512]
                loss_fn(model(torch.from_numpy(X[idx]).permute(0, 3, 1, 2)), torch.from_numpy(y[idx]))
    return time.perf_counter() - t0


def test_engine_overhead(fashion, record):
    from runtime.ml.common import validation_split
    from runtime.ml.preprocess import load_transform

    prep = load_transform(fashion, fashion.store.last_step_run("model.preprocess").summary["key"])
    tr, va = validation_split(prep.y_train, 0.2, 42)
    epochs = 3  # the engine's costs are mostly per run (loading the cached tensors, the checkpoint), not per epoch
    over = {"model.train": {"framework": "torch", "template": "cnn", "epochs": epochs, "patience": 0, "use_tuned": False,
                            "batch_size": 64, "lr": 0.001, "hidden": 128, "dropout": 0.3}}
    engine, plain = [], []
    for _ in range(2):
        t0 = time.perf_counter()
        assert Runner(fashion).run(steps=["model.train"], overrides=over).ok
        engine.append(time.perf_counter() - t0)
        plain.append(_plain_torch_loop(prep.X_train, prep.y_train, tr, va, prep.classes, epochs, 64, 0.001, 42))
    ratio = min(engine) / min(plain)
    record("model.engine_overhead", epochs=epochs, engine_s=round(min(engine), 2), plain_s=round(min(plain), 2),
           ratio=round(ratio, 3), target=1.05)
    assert ratio <= 1.05


def test_asha_against_random_search(bbc, record):
    common = {"n_trials": 20, "max_epochs": 8, "min_epochs": 1, "reduction_factor": 3, "seed": 3}
    assert Runner(bbc).run(until="model.preprocess").ok

    def run(sampler: str, pruner: str) -> list[list[float]]:
        res = Runner(bbc).run(steps=["model.tune"], overrides={"model.tune": {**common, "sampler": sampler,
                                                                               "pruner": pruner}})
        assert res.ok, res.steps[0].error
        exp = res.steps[0].summary["experiment_id"]
        return [[m["val_accuracy"] for m in bbc.store.metrics(t.id)] for t in bbc.store.trials(exp)]

    random_curves = run("random", "none")
    asha_curves = run("tpe", "asha")
    random_epochs = sum(len(c) for c in random_curves)
    best_random = max(max(c) for c in random_curves)
    target = best_random - 0.005
    spent, reached = 0, None
    for curve in asha_curves:
        for acc in curve:
            spent += 1
            if acc >= target and reached is None:
                reached = spent
    asha_epochs = spent
    fraction = (reached if reached is not None else float("inf")) / random_epochs
    record("model.asha_vs_random", random_epochs=random_epochs, asha_epochs_total=asha_epochs,
           best_random=round(best_random, 4), asha_epochs_to_reach=reached, fraction=round(fraction, 3),
           target=0.40)
    assert fraction <= 0.40

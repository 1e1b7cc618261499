"""model.train's init_from: retraining starts from a registered version's weights (or a weights file). The input
layer follows the vocabulary term by term and the output layer the classes by name, so a new dataset version
(new texts, a new class) still starts from what the model knew; what does not fit is an error that says why."""

from __future__ import annotations

import pytest

from runtime.api import add_source
from runtime.jobs import Runner
from runtime.labeling import LabelQueue
from runtime.registry import lineage
from tests.conftest import make_bbc_subset

SMALL = {"use_tuned": False, "hidden": 32, "refit": False, "epochs": 3, "patience": 0}


def _state(ws, ref: str) -> dict:  # noqa: ANN001
    import torch

    mv = ws.store.resolve_model(ref)
    return torch.load(ws.artifacts.get(mv.artifacts["checkpoint"]), map_location="cpu", weights_only=True)


def _vocab(ws, ref: str) -> dict[str, int]:  # noqa: ANN001
    from runtime.ml.preprocess import load_transform

    return load_transform(ws, ws.store.resolve_model(ref).transform).spec["vocabulary"]


def _train(ws, **params):  # noqa: ANN001, ANN003
    return Runner(ws).run(steps=["model.train"], overrides={"model.train": {**SMALL, **params}})


def test_torch_warm_start_carries_terms_and_classes_over_to_a_new_dataset_version(small_bbc, tmp_path):
    import numpy as np

    ws = small_bbc
    assert Runner(ws).run(until="model.preprocess").ok
    assert _train(ws).ok and Runner(ws).run(steps=["model.register"]).ok
    # a new dataset version: more articles (new terms in the vocabulary) and a new class, "science"
    assert add_source(ws, make_bbc_subset(tmp_path / "more.zip", per_class=40)).ok
    assert Runner(ws).run(until="data.label").ok
    techs = [r for r in ws.dataset().rows if r.label == "tech"][:12]
    q = LabelQueue(ws, "ann")
    for r in techs:
        q.set_label(r.uid, "science")
    assert Runner(ws).run(until="model.preprocess").ok
    # lr 0: the weights it trains are exactly the ones it started from
    res = _train(ws, init_from="challenger", lr=0.0, epochs=1)
    assert res.ok, res.steps[0].error
    report = res.steps[0].summary["init_from"]
    assert report["from"] == "ws:1" and report["classes"]["new"] == ["science"]
    assert len(report["classes"]["carried"]) == 5 and report["classes"]["dropped"] == []
    assert 0 < report["terms"]["new"] < report["terms"]["carried"], report
    assert Runner(ws).run(steps=["model.register"]).ok
    assert lineage(ws.store, "ws:2")["init_from"]["from"] == "ws:1"

    old, new = _state(ws, "ws:1"), _state(ws, "ws:2")
    v_old, v_new = _vocab(ws, "ws:1"), _vocab(ws, "ws:2")
    c_old, c_new = old["arch"]["classes"], new["arch"]["classes"]
    w_old, w_new = old["state_dict"]["net.0.weight"].numpy(), new["state_dict"]["net.0.weight"].numpy()
    shared = [t for t in v_new if t in v_old]
    fresh = [t for t in v_new if t not in v_old]
    assert len(shared) == report["terms"]["carried"] and len(fresh) == report["terms"]["new"]
    for t in shared[:50] + shared[-50:]:
        np.testing.assert_array_equal(w_new[:, v_new[t]], w_old[:, v_old[t]], err_msg=t)
    assert not w_new[:, [v_new[t] for t in fresh]].any()  # a term it never saw starts at zero
    out_old, out_new = old["state_dict"]["net.8.weight"].numpy(), new["state_dict"]["net.8.weight"].numpy()
    assert out_new.shape[0] == 6 and c_new == sorted(c_old + ["science"])
    for c in c_old:
        np.testing.assert_array_equal(out_new[c_new.index(c)], out_old[c_old.index(c)], err_msg=c)
    assert out_new[c_new.index("science")].any()  # the new class keeps its fresh initialisation
    for name in ("net.1.weight", "net.4.weight", "net.4.bias"):
        np.testing.assert_array_equal(new["state_dict"][name].numpy(), old["state_dict"][name].numpy())

    # what does not fit fails before a single epoch, and says which tensors and which settings
    res = _train(ws, init_from="ws:1", hidden=64)
    err = res.steps[0].error
    assert not res.ok and "init_from ws:1 does not fit this model" in err and "(32, " in err and "(64, " in err
    assert "hidden 32 there, 64 here" in err, err
    res = _train(ws, init_from="ws:9")
    assert not res.ok and "model ws has no version 9" in res.steps[0].error
    res = _train(ws, init_from="ws:1", framework="keras")
    assert not res.ok and "a torch model, and model.train.framework is keras" in res.steps[0].error
    # a weights file: no vocabulary with it, so the input layer is taken as it is; no classes in a bare
    # state_dict, so a changed output layer is an error that names it
    import torch

    torch.save(old["state_dict"], ws.root / "w.pt")
    res = _train(ws, init_from="w.pt")
    assert not res.ok and "net.8.weight is (5, 16) in w.pt and (6, 16) here" in res.steps[0].error
    torch.save(new, ws.root / "w2.pt")  # a checkpoint of this workspace names its classes: it fits
    res = _train(ws, init_from="w2.pt", lr=0.0, epochs=1)
    assert res.ok, res.steps[0].error
    assert res.steps[0].summary["init_from"]["classes"]["new"] == [] and "terms" not in res.steps[0].summary["init_from"]
    res = _train(ws, init_from="missing.pt")
    assert not res.ok and "missing.pt does not exist" in res.steps[0].error


@pytest.mark.tensorflow
def test_keras_warm_start_takes_every_layer(small_bbc):
    import numpy as np

    from runtime.ml import keras_backend

    ws = small_bbc
    assert Runner(ws).run(until="model.preprocess").ok
    assert _train(ws, framework="keras").ok and Runner(ws).run(steps=["model.register"]).ok
    res = _train(ws, framework="keras", init_from="ws:1", lr=0.0, epochs=1)
    assert res.ok, res.steps[0].error
    assert res.steps[0].summary["init_from"]["terms"]["new"] == 0
    assert Runner(ws).run(steps=["model.register"]).ok
    a = keras_backend.load(ws.artifacts.get(ws.store.resolve_model("ws:1").artifacts["checkpoint"]))
    b = keras_backend.load(ws.artifacts.get(ws.store.resolve_model("ws:2").artifacts["checkpoint"]))
    wa, wb = a.get_weights(), b.get_weights()
    assert len(wa) == len(wb)
    for x, y in zip(wa, wb, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-7)
    res = _train(ws, framework="keras", init_from="ws:1", hidden=64)
    assert not res.ok and "does not fit this model" in res.steps[0].error


def test_loading_a_keras_checkpoint_from_the_artifact_store_leaves_no_copy_behind(tmp_path, monkeypatch):
    """Artifacts are stored by hash, without the suffix Keras goes by: load() loads a named copy, and removes it."""
    import tempfile

    import numpy as np

    from runtime.ml import keras_backend

    keras = keras_backend._keras()
    model = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(3)])
    model.save(tmp_path / "m.keras")
    stored = tmp_path / "ab12cd"  # as the artifact store keeps it
    stored.write_bytes((tmp_path / "m.keras").read_bytes())
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    loaded = keras_backend.load(stored)
    x = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-6)
    assert list(temp.iterdir()) == []


def test_a_file_that_is_no_weights_is_named_with_the_loaders_first_line_cut_between_words(tmp_path):
    """init_from a file torch cannot load says what torch said, its first line: cut at 200 characters mid-word
    before, without a mark; `first_line` cuts between words and ends with '…' (the status line's failed-run
    reason, `cdl doctor`'s git error and the Keras loader's error share it)."""
    from torch import nn

    from runtime.domain.errors import first_line
    from runtime.ml import torch_backend
    from runtime.ml.common import WarmStartError

    bad = tmp_path / "weights.pt"
    bad.write_bytes(b"these are no weights\n")
    with pytest.raises(WarmStartError, match=r"^init_from ws:1: not a PyTorch weights file \(\w+: \S") as err:
        torch_backend.warm_start(nn.Linear(2, 2), {"checkpoint": str(bad), "ref": "ws:1"}, ["a", "b"], True)
    assert "\n" not in str(err.value)
    assert first_line("short\nsecond") == "short"
    assert first_line(None) == ""
    long = "word " * 100
    cut = first_line(long, 50)
    assert cut.endswith("word…") and len(cut) <= 50, cut
    assert first_line("x" * 300, 50) == "x" * 49 + "…"  # one long token: cut where it must

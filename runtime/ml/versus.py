"""One model version measured on another's test split: how model.evaluate compares the champion with a candidate,
and `cdl models compare` any two versions. A version trained on another dataset version was evaluated on another
test split, so its own numbers say little about this one's data: here its own preprocessing is applied to these
test items, and a class it does not know counts as wrong."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from runtime.domain.entities import ModelVersion
from runtime.domain.errors import CdlError
from runtime.domain.text import local_time
from runtime.workspace.workspace import Workspace


def predict_proba(ws: Workspace, mv: ModelVersion, X: Any) -> np.ndarray:  # noqa: ANN401
    """Class probabilities of model version `mv` on inputs X (made with its own transform)."""
    ckpt = ws.artifacts.get(mv.artifacts["checkpoint"])
    if mv.framework == "torch":
        from runtime.ml import torch_backend

        return torch_backend.predict_proba(ckpt, X, ws.root)
    from runtime.ml import keras_backend

    return keras_backend.predict_proba(ckpt, X, mv.extra["arch"], ws.root)


def measure_on(ws: Workspace, mv: ModelVersion, owner: ModelVersion, owner_prep: Any = None,  # noqa: ANN401
               log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """`mv`'s test metrics on `owner`'s test split (owner_prep: owner's transform, when the caller has it loaded):
    {ref, dataset_version, same_test_set, seen_in_training, test_accuracy, macro_f1, per_class, confusion_matrix,
    classes, n, classes_it_lacks}. seen_in_training: how many of these test items `mv` was trained on (a split
    drawn anew flatters it). Raises where `mv` cannot be run on them."""
    from runtime.ml.common import evaluate_labels
    from runtime.ml.preprocess import load_transform, test_inputs_under

    prep = owner_prep if owner_prep is not None else load_transform(ws, owner.transform, log=log)
    same = mv.transform == owner.transform
    out: dict[str, Any] = {"ref": mv.ref, "dataset_version": mv.dataset_version, "same_test_set": same}
    if same:
        X = prep.X_test
        out["seen_in_training"] = 0
    else:
        fitted = load_transform(ws, mv.transform, log=log)
        out["seen_in_training"] = len(set(prep.uids_test) & set(fitted.uids_train))
        X = test_inputs_under(ws, owner.dataset_version, prep.uids_test, fitted, ws.store.get_transform(mv.transform).spec)
    probs = predict_proba(ws, mv, X)
    index = {c: i for i, c in enumerate(prep.classes)}
    pred = np.array([index.get(mv.classes[i], -1) for i in probs.argmax(axis=1)], np.int64)
    ev = evaluate_labels(prep.y_test, pred, prep.classes)
    known = set(mv.classes)
    lacks = {c: int((prep.y_test == index[c]).sum()) for c in prep.classes if c not in known}
    out.update({k: ev[k] for k in ("test_accuracy", "macro_f1", "per_class", "confusion_matrix", "classes", "n")},
               classes_it_lacks={c: n for c, n in lacks.items() if n})
    return out


METRICS = ("test_accuracy", "macro_f1", "val_accuracy", "val_loss", "train_accuracy")


def _code(mv: Any) -> str | None:  # noqa: ANN401
    """A src: template's code as the version's checkpoint keeps it, by sha256: the same template name may be two
    models (src/net.py edited between them)."""
    source = (mv.extra.get("arch") or {}).get("source") or {}
    return f"sha256 {source['sha256'][:12]}" if source.get("sha256") else None


def _experiment(ws: Workspace, exp_id: int | None) -> str | None:
    """"train-1 (#2)": its name as the experiments list and `cdl experiments show` give it (the comparison said 2
    and 8, ids found nowhere else)."""
    if exp_id is None:
        return None
    try:
        return f"{ws.store.experiment(exp_id).name} (#{exp_id})"
    except CdlError:
        return f"#{exp_id}"


def compare(ws: Workspace, a_ref: str, b_ref: str, on: str = "auto",
            log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Two model versions side by side, as MLflow compares runs: what they were made from (data, code, template,
    framework, parameters), their metrics, each on its own test split, and per class F1. Where the test splits
    differ, `on` ("auto": b's, "a", "b", or "own": none) names the version whose test split both are measured on.
    {"a", "b", "same_test_set", "lineage": [{field, a, b, differs}], "params": [...], "metrics": [{name, a, b,
    change}], "per_class": [{class, a_f1, b_f1}], "on_split": None | {"of", "a": {...}, "b": {...}}}."""
    from runtime.registry import trial_number

    a, b = ws.store.resolve_model(a_ref), ws.store.resolve_model(b_ref)

    def row(field: str, x: Any, y: Any) -> dict[str, Any]:  # noqa: ANN401
        return {"field": field, "a": x, "b": y, "differs": x != y}

    lineage = [row("dataset version", a.dataset_version, b.dataset_version),
               row("transform", a.transform[:12], b.transform[:12]),
               row("framework", a.framework, b.framework), row("template", a.template, b.template),
               *([row("model code", _code(a), _code(b))] if _code(a) or _code(b) else []),
               row("git commit", (a.git_commit or "")[:10] + (" (dirty)" if a.git_dirty else ""),
                   (b.git_commit or "")[:10] + (" (dirty)" if b.git_dirty else "")),
               row("classes", ", ".join(a.classes), ", ".join(b.classes)),
               row("experiment", _experiment(ws, a.experiment_id), _experiment(ws, b.experiment_id)),
               row("trial", trial_number(ws.store, a), trial_number(ws.store, b)),  # as `experiments show` takes it
               row("init_from", a.extra.get("init_from"), b.extra.get("init_from")),
               row("aliases", ", ".join(a.aliases), ", ".join(b.aliases)),
               row("created", local_time(a.created), local_time(b.created))]
    params = [{"name": k, "a": a.params.get(k), "b": b.params.get(k), "differs": a.params.get(k) != b.params.get(k)}
              for k in sorted(set(a.params) | set(b.params))]
    metrics = []
    for m in METRICS:
        x, y = a.metrics.get(m), b.metrics.get(m)
        if x is None and y is None:
            continue
        metrics.append({"name": m, "a": x, "b": y, "change": (y - x) if x is not None and y is not None else None})
    pa, pb = (a.evaluation or {}).get("per_class", {}), (b.evaluation or {}).get("per_class", {})
    def f1(per: dict[str, Any], c: str) -> float | None:  # none for a class its test split did not have
        d = per.get(c, {})
        return d.get("f1") if d.get("support", 1) else None

    per_class = [{"class": c, "a_f1": f1(pa, c), "b_f1": f1(pb, c)} for c in sorted(set(pa) | set(pb))]
    same = a.transform == b.transform
    doc: dict[str, Any] = {"a": a.ref, "b": b.ref, "same_test_set": same, "lineage": lineage, "params": params,
                           "metrics": metrics, "per_class": per_class, "on_split": None}
    if on not in ("auto", "a", "b", "own"):
        from runtime.domain.errors import CdlError

        raise CdlError(f"--on must be auto, a, b or own, not {on!r}")
    if same or on == "own":
        return doc
    owner, other = (a, b) if on == "a" else (b, a)
    try:
        measured = measure_on(ws, other, owner, log=log)
    except Exception as exc:  # noqa: BLE001 - the rest of the comparison stands; say why this part is missing
        from runtime.domain.errors import CdlError

        doc["on_split"] = {"of": owner.ref, "error": str(exc) if isinstance(exc, CdlError)
                           else f"{type(exc).__name__}: {exc}"}
        return doc
    own = {"ref": owner.ref, "test_accuracy": owner.metrics.get("test_accuracy"),
           "macro_f1": owner.metrics.get("macro_f1"), "n": (owner.evaluation or {}).get("n")}
    doc["on_split"] = {"of": owner.ref, "dataset_version": owner.dataset_version,
                       "a": measured if other is a else own, "b": own if other is a else measured}
    return doc


def flattered(seen: int, items: str, whose: str) -> str:
    """'3 of these test items were in its training data, which flatters it': what a measurement on a test split
    holding items the measured version trained on says ('1 of them was', where it said 'were')."""
    return f"{seen} of {items} {'was' if seen == 1 else 'were'} in {whose} training data, which flatters it"
